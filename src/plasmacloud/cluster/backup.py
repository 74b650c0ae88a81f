"""A consistent, checksummed backup of a running cluster's three services, and its check.

One directory (0700) holds, each file 0600 with its SHA-256 in ``manifest.json``:

* ``chainfire.db``: a Chainfire snapshot (``etcdctl snapshot save``'s format: the store's
  SQLite database and its SHA-256) taken from the leader at one revision;
* ``flaredb.sqlite``: FlareDB's database file from its leader (``/db/backup``);
* ``iam.json``: IAM's records from Chainfire's system keyspace (users, policies, signing
  keys, these sealed under the cluster's sealing key, which the backup does not hold).

Taking it needs the operator's identity (snapshot, FlareDB backup) and a node's (only
members read the system keyspace). It is what ``plasma cluster restore`` and ``plasma lab
restore`` lay down again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from plasmacloud import __version__
from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.chainfire.restore import (
    SnapshotError,
    encode_system_records,
    read_snapshot,
    read_system_records,
    snapshot_revision,
)
from plasmacloud.cluster.probe import dial
from plasmacloud.common.config import NodeConfig, PeerConfig, TLSConfig
from plasmacloud.common.files import write_atomic
from plasmacloud.common.tls import client_context
from plasmacloud.flaredb.client import Client
from plasmacloud.flaredb.client import Error as FlareError
from plasmacloud.iam.system_store import ChainfireSystemStore

FORMAT = 1
MANIFEST = "manifest.json"
CHAINFIRE_FILE = "chainfire.db"
FLAREDB_FILE = "flaredb.sqlite"
IAM_FILE = "iam.json"
_PAGE = 500
_TIMEOUT_S = 60.0


class BackupError(RuntimeError):
    """The cluster could not be backed up, or a backup fails its check; says which part."""


@dataclass(frozen=True)
class Part:
    file: str
    sha256: str
    bytes: int
    detail: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    format: int
    cluster: str
    created_at: str
    plasmacloud_version: str
    chainfire: Part
    flaredb: Part
    iam: Part

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        try:
            doc = json.loads((directory / MANIFEST).read_text())
            manifest = cls(
                format=int(doc["format"]),
                cluster=str(doc["cluster"]),
                created_at=str(doc["created_at"]),
                plasmacloud_version=str(doc["plasmacloud_version"]),
                chainfire=Part(**doc["chainfire"]),
                flaredb=Part(**doc["flaredb"]),
                iam=Part(**doc["iam"]),
            )
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise BackupError(f"{directory / MANIFEST} is not a backup manifest: {exc}") from None
        if manifest.format != FORMAT:
            raise BackupError(f"backup format {manifest.format}; this release reads {FORMAT}")
        return manifest


def _part(directory: Path, name: str, data: bytes, **detail: int) -> Part:
    write_atomic(directory / name, data, 0o600)
    return Part(name, hashlib.sha256(data).hexdigest(), len(data), detail)


async def _leader_snapshot(peers: list[PeerConfig], tls: TLSConfig) -> tuple[bytes, int]:
    """(snapshot blob, revision) from Chainfire's leader."""
    errors = []
    for peer in peers:
        async with dial(f"{peer.ip}:{peer.ports.chainfire_client}", tls) as channel:
            maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
            try:
                status = await maintenance.Status(rpc_pb2.StatusRequest(), timeout=10)
                if status.leader != status.header.member_id:
                    continue
                chunks = [
                    r.blob
                    async for r in maintenance.Snapshot(
                        rpc_pb2.SnapshotRequest(), timeout=_TIMEOUT_S
                    )
                ]
            except Exception as exc:  # gRPC errors: try the next member
                errors.append(f"{peer.node_id}: {exc}")
                continue
            blob = b"".join(chunks)
            # the snapshot's own revision: writes go on between the Status and the
            # snapshot, so the Status's revision may be older than what the file holds
            return blob, snapshot_revision(blob[: -hashlib.sha256().digest_size])
    raise BackupError(f"no Chainfire leader gave a snapshot ({'; '.join(errors) or 'none'})")


def _flaredb_leader(peers: list[PeerConfig], tls: TLSConfig) -> Client:
    """A client of FlareDB's leader, as any node's ``/nodes`` names it (a follower's copy
    of the database may lag, and ``/db/load`` is the leader's to replicate)."""
    ctx = client_context(tls)
    scheme = "https" if tls.enabled else "http"
    for peer in peers:
        url = f"{scheme}://{peer.ip}:{peer.ports.flaredb_http}"
        try:
            nodes = Client(url, ctx, timeout=_TIMEOUT_S).nodes()
        except (FlareError, ValueError, KeyError):
            continue
        leader = next((n for n in nodes if n.get("leader")), None)
        if leader is not None:
            return Client(str(leader["api_addr"]), ctx, timeout=_TIMEOUT_S)
    raise BackupError("no FlareDB node names a leader")


def _flaredb_backup(peers: list[PeerConfig], tls: TLSConfig) -> bytes:
    """FlareDB's database file from its leader."""
    try:
        return _flaredb_leader(peers, tls).backup()
    except FlareError as exc:
        raise BackupError(f"FlareDB backup failed: {exc}") from None


def load_flaredb(peers: list[PeerConfig], tls: TLSConfig, database: bytes) -> None:
    """Replace FlareDB's whole database with a backup's file (rqlite's ``/db/load``)."""
    try:
        _flaredb_leader(peers, tls).load(database)
    except FlareError as exc:
        raise BackupError(f"FlareDB load failed: {exc}") from None


async def _iam_records(node: NodeConfig) -> list[tuple[bytes, bytes]]:
    store = ChainfireSystemStore.from_config(node)
    rows: list[tuple[bytes, bytes]] = []
    try:
        after = None
        while True:
            page = await store.range("", start_after=after, limit=_PAGE)
            rows.extend((kv.key.encode(), kv.value) for kv in page)
            if len(page) < _PAGE:
                return rows
            after = page[-1].key
    finally:
        await store.close()


async def take_backup(node: NodeConfig, operator_tls: TLSConfig, out: Path) -> Manifest:
    """Back ``node``'s cluster up into the new or empty directory ``out``: the operator's
    TLS identity takes the snapshot and FlareDB's file, the node's certificate reads IAM's
    records (only members may)."""
    if out.exists() and any(out.iterdir()):
        raise BackupError(f"{out} is not empty; back up into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    snapshot, revision = await _leader_snapshot(node.peers, operator_tls)
    flaredb = await asyncio.to_thread(_flaredb_backup, node.peers, operator_tls)
    records = await _iam_records(node)
    manifest = Manifest(
        format=FORMAT,
        cluster=node.cluster_name,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        plasmacloud_version=__version__,
        chainfire=_part(out, CHAINFIRE_FILE, snapshot, revision=revision),
        flaredb=_part(out, FLAREDB_FILE, flaredb),
        iam=_part(out, IAM_FILE, encode_system_records(records), records=len(records)),
    )
    write_atomic(out / MANIFEST, json.dumps(asdict(manifest), indent=2).encode(), 0o600)
    return manifest


def verify_backup(directory: Path) -> Manifest:
    """Check every file against the manifest and its own format; BackupError naming the
    first problem."""
    manifest = Manifest.read(directory)
    for part in (manifest.chainfire, manifest.flaredb, manifest.iam):
        path = directory / part.file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BackupError(f"{path}: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != part.sha256:
            raise BackupError(f"{path} does not match its SHA-256 in the manifest")
    try:
        read_snapshot(directory / manifest.chainfire.file)
        read_system_records(directory / manifest.iam.file)
    except SnapshotError as exc:
        raise BackupError(str(exc)) from None
    db = sqlite3.connect(f"file:{directory / manifest.flaredb.file}?mode=ro", uri=True)
    try:
        ok = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        ok = str(exc)
    finally:
        db.close()
    if ok != "ok":
        raise BackupError(f"{manifest.flaredb.file} is not a sound SQLite database: {ok}")
    return manifest
