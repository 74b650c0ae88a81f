"""Lay a snapshot file down as a member's data, as ``etcdctl snapshot restore`` does.

A snapshot file (``etcdctl snapshot save``, or a ``plasma cluster backup``) is the store's
SQLite database followed by its SHA-256. Restoring it writes the database into a member's
empty data directory and seeds a new Raft group with it (:mod:`plasmacloud.raft.seed`):
a Raft snapshot of the same database, with the config's peer list as the members, as
etcd's restore writes a snap file and a new member list. Every member restored from the
same file starts that group at the snapshot's revision, and a member added later is sent
the restored data by snapshot. The snapshot carries no system keyspace (a client never
receives IAM's records); a backup's IAM records can be given to put back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from plasmacloud.chainfire import system
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.common.config import NodeConfig
from plasmacloud.raft.nodeconfig import raft_members
from plasmacloud.raft.seed import SEED_INDEX, seed_group

_DIGEST = hashlib.sha256().digest_size
STORE_FILE = "kv.db"
RAFT_DIR = "raft"


class SnapshotError(ValueError):
    """The file is not a usable snapshot, or the target is not empty; says which."""


@dataclass(frozen=True)
class SnapshotStatus:
    """What ``etcdctl snapshot status`` prints: hash, revision, keys, size."""

    hash: int  # CRC-32 of the history, as HashKV answers at this revision
    revision: int
    total_keys: int
    total_size: int


def read_snapshot(path: Path) -> bytes:
    """The database in a snapshot file, its SHA-256 trailer checked."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"snapshot {path}: {exc.strerror}") from None
    db, digest = blob[:-_DIGEST], blob[-_DIGEST:]
    if len(blob) <= _DIGEST or hashlib.sha256(db).digest() != digest:
        raise SnapshotError(
            f"snapshot {path} fails its SHA-256 check: not a Chainfire snapshot, or cut "
            "short; take it again with `etcdctl snapshot save`"
        )
    return db


def _open_image(db: bytes) -> sqlite3.Connection:
    image = sqlite3.connect(":memory:", isolation_level=None)
    try:
        image.deserialize(db)
        image.execute("SELECT v FROM meta WHERE k = 'revision'").fetchone()
    except sqlite3.DatabaseError as exc:
        image.close()
        raise SnapshotError(f"the snapshot's database is not Chainfire's: {exc}") from None
    return image


def snapshot_revision(db: bytes) -> int:
    """The store revision a snapshot database holds (what a restore starts at)."""
    image = _open_image(db)
    try:
        row = image.execute("SELECT v FROM meta WHERE k = 'revision'").fetchone()
    finally:
        image.close()
    return int(row[0]) if row else 1


def snapshot_status(path: Path) -> SnapshotStatus:
    """Hash, revision, key count and size of a snapshot file."""
    db = read_snapshot(path)
    image = _open_image(db)
    try:
        keys = int(image.execute("SELECT count(*) FROM cur").fetchone()[0])
    finally:
        image.close()
    # the store computes HashKV over a file of its own: a private copy, not one beside
    # the operator's snapshot (whose directory may be read-only)
    with tempfile.TemporaryDirectory(prefix="plasma-snapshot-") as scratch:
        copy = Path(scratch) / STORE_FILE
        copy.write_bytes(db)
        store = MvccStore(copy)
        try:
            hash_, _compact, revision = store.hash_kv(0)
        finally:
            store.close()
    return SnapshotStatus(hash_, revision, keys, len(db))


def restore_member(
    db: bytes,
    data_dir: Path,
    members: dict[str, str],
    system_records: Iterable[tuple[bytes, bytes]] = (),
) -> int:
    """Write snapshot database ``db`` as the Chainfire data in ``data_dir`` (which must not
    hold a member already), with ``system_records`` as its system keyspace, as a member of
    a new group of ``members`` (:func:`member_addresses`); returns the revision restored."""
    store_path, raft = data_dir / STORE_FILE, data_dir / RAFT_DIR
    if store_path.exists() or raft.exists():
        raise SnapshotError(
            f"{data_dir} already holds a member's data; restore into a new or emptied data "
            "directory (etcdctl snapshot restore refuses an existing one too)"
        )
    image = _open_image(db)
    try:
        image.execute("BEGIN")
        # the new group's seed snapshot is this state; its log continues after it
        image.execute("INSERT OR REPLACE INTO meta(k, v) VALUES('applied_index', ?)", (SEED_INDEX,))
        image.execute("DELETE FROM alarm")  # etcd's restore starts without alarms too
        system.adopt(image, list(system_records))
        image.execute("COMMIT")
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = store_path.with_suffix(".restore")
        target = sqlite3.connect(tmp)
        try:
            image.backup(target)
        finally:
            target.close()
        seed_group(raft, members, tmp.read_bytes())
        tmp.replace(store_path)
    finally:
        image.close()
    return snapshot_revision(db)


def member_addresses(config: NodeConfig) -> dict[str, str]:
    """Chainfire's Raft members for the node of ``config``: every peer's peer port."""
    return raft_members(config, lambda ports: ports.chainfire_peer)


def encode_system_records(rows: Iterable[tuple[bytes, bytes]]) -> bytes:
    """System keyspace records (a backup's IAM state) as the JSON a backup keeps (signing
    keys in them stay sealed); :func:`read_system_records` reads it back."""
    records = [
        {"key": base64.b64encode(k).decode(), "value": base64.b64encode(v).decode()}
        for k, v in rows
    ]
    return json.dumps({"records": records}, indent=1).encode()


def read_system_records(path: Path) -> list[tuple[bytes, bytes]]:
    """The records :func:`encode_system_records` wrote to ``path``."""
    try:
        doc = json.loads(path.read_text())
        return [
            (base64.b64decode(r["key"], validate=True), base64.b64decode(r["value"]))
            for r in doc["records"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"system records {path} are not readable: {exc}") from None
