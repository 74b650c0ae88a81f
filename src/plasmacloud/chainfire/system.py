"""The system keyspace's table: records the product keeps for itself (IAM's state).

etcd keeps its auth state in its own bolt bucket, written by its own Raft requests and
reachable by no KV call; this is the same for Chainfire. The ``sys`` table lives in the
state machine's SQLite file (so Raft snapshots carry it, and every replica applies the
same commands to it), but it has no MVCC: no revisions, history or watch events, and it
never changes the store's revision. Each key has a ``version`` drawn from one counter
that every write advances, so a version changes on every write and is never reused
(compare-and-swap stays safe across delete and re-create); ``0`` means absent.

These functions run inside :class:`~plasmacloud.chainfire.mvcc.MvccStore`'s apply
transaction or under its lock; the gRPC face is ``services/system.py``.
"""

from __future__ import annotations

import sqlite3

from plasmacloud.chainfire.proto import system_pb2
from plasmacloud.common.keyrange import prefix_end

SCHEMA = """
CREATE TABLE IF NOT EXISTS sys(
  key BLOB PRIMARY KEY, version INTEGER NOT NULL, value BLOB NOT NULL) WITHOUT ROWID;
"""

# where an older release kept IAM's state in the public keyspace (moved once, see migrate)
LEGACY_PREFIX = b"/plasmacloud/iam/"
_COUNTER = "sys_version"  # meta row: the last version handed out
_MIGRATED = "sys_migrated"  # meta row: the legacy keys were moved (set once, never cleared)


def _kv(row: tuple[bytes, int, bytes]) -> system_pb2.KeyValue:
    return system_pb2.KeyValue(key=row[0], version=row[1], value=row[2])


def _version(db: sqlite3.Connection, key: bytes) -> int:
    row = db.execute("SELECT version FROM sys WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def _next_version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT v FROM meta WHERE k = ?", (_COUNTER,)).fetchone()
    version = (int(row[0]) if row else 0) + 1
    db.execute("INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)", (_COUNTER, version))
    return version


def _write(db: sqlite3.Connection, key: bytes, value: bytes) -> int:
    version = _next_version(db)
    db.execute(
        "INSERT OR REPLACE INTO sys(key, version, value) VALUES(?,?,?)", (key, version, value)
    )
    return version


def _remove(db: sqlite3.Connection, key: bytes) -> bool:
    return db.execute("DELETE FROM sys WHERE key = ?", (key,)).rowcount > 0


# -- reads (callers hold the store's lock) -------------------------------------------


def get(db: sqlite3.Connection, req: system_pb2.GetRequest) -> system_pb2.GetResponse:
    row = db.execute("SELECT key, version, value FROM sys WHERE key = ?", (req.key,)).fetchone()
    return system_pb2.GetResponse(kv=_kv(row)) if row else system_pb2.GetResponse()


def range_(db: sqlite3.Connection, req: system_pb2.RangeRequest) -> system_pb2.RangeResponse:
    sql = "SELECT key, version, value FROM sys WHERE key >= ?"
    params: list[bytes | int] = [req.prefix]
    end = prefix_end(req.prefix) if req.prefix else b"\0"
    if end != b"\0":
        sql += " AND key < ?"
        params.append(end)
    if req.HasField("start_after"):
        sql += " AND key > ?"
        params.append(req.start_after)
    sql += " ORDER BY key"
    if req.limit > 0:
        sql += " LIMIT ?"
        params.append(req.limit)
    return system_pb2.RangeResponse(kvs=[_kv(r) for r in db.execute(sql, params)])


def migrated(db: sqlite3.Connection) -> bool:
    """True once the legacy keys were moved (on a new cluster: once the marker was set)."""
    return db.execute("SELECT 1 FROM meta WHERE k = ?", (_MIGRATED,)).fetchone() is not None


# -- writes (inside the apply transaction; deterministic on every replica) ------------


def put(db: sqlite3.Connection, req: system_pb2.PutRequest) -> system_pb2.PutResponse:
    return system_pb2.PutResponse(version=_write(db, req.key, req.value))


def delete(db: sqlite3.Connection, req: system_pb2.DeleteRequest) -> system_pb2.DeleteResponse:
    return system_pb2.DeleteResponse(deleted=_remove(db, req.key))


def compare_and_swap(
    db: sqlite3.Connection, req: system_pb2.CompareAndSwapRequest
) -> system_pb2.CompareAndSwapResponse:
    current = _version(db, req.key)
    if current != req.expected_version:
        return system_pb2.CompareAndSwapResponse(succeeded=False, version=current)
    if not req.HasField("value"):
        _remove(db, req.key)
        return system_pb2.CompareAndSwapResponse(succeeded=True, version=0)
    return system_pb2.CompareAndSwapResponse(succeeded=True, version=_write(db, req.key, req.value))


def scrub(db: sqlite3.Connection) -> None:
    """Empty the table for good in a copy of the database (no freed page keeps a
    record); the migration marker stays, so a restore does not move user keys."""
    db.execute("PRAGMA secure_delete=ON")
    db.execute("DELETE FROM sys")
    db.execute("VACUUM")


def adopt(db: sqlite3.Connection, rows: list[tuple[bytes, bytes]]) -> None:
    """Copy legacy (key, value) rows in and set the migrated marker (the migration's
    system half; the store deletes the public copies in the same entry).

    The legacy value wins over a key already written here: the legacy keyspace held the
    cluster's real state (the service answers nothing until the marker is set, so only
    a command proposed before an upgrade could have written here first).
    """
    for key, value in rows:
        _write(db, key, value)
    db.execute("INSERT OR REPLACE INTO meta(k, v) VALUES(?, 1)", (_MIGRATED,))
