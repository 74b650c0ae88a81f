"""WAL checkpoints run on the checkpointer's thread, never inside a commit."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.wal import WalCheckpointer

from .conftest import Applier

ROWS = 300
BLOB = b"x" * 4096


def wal_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t(v BLOB)")
    return db


def fill(db: sqlite3.Connection) -> None:
    db.execute("BEGIN")
    db.executemany("INSERT INTO t VALUES(?)", [(BLOB,)] * ROWS)
    db.execute("COMMIT")


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_commits_leave_the_wal_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db = wal_db(path)
    ckpt = WalCheckpointer(path, interval=3600)  # only explicit checkpoints here
    try:
        fill(db)
        # committed, but still only in the WAL: the commit did not copy it back
        assert path.stat().st_size < ROWS * len(BLOB)
        ckpt.checkpoint()
        assert path.stat().st_size >= ROWS * len(BLOB)
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == ROWS
    finally:
        ckpt.stop()
        db.close()


def test_the_thread_checkpoints_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    db = wal_db(path)
    ckpt = WalCheckpointer(path, interval=0.01)
    try:
        fill(db)
        assert wait_for(lambda: path.stat().st_size >= ROWS * len(BLOB))
    finally:
        ckpt.stop()
        db.close()
    assert not any(t.name == f"wal-checkpoint:{path.name}" for t in threading.enumerate())


def test_store_data_reaches_the_database_file(tmp_path: Path) -> None:
    store = MvccStore(tmp_path / "kv.db")
    apply = Applier(store)
    try:
        apply(*(pb.PutRequest(key=b"k%d" % i, value=BLOB) for i in range(ROWS)))
        assert wait_for(lambda: (tmp_path / "kv.db").stat().st_size >= ROWS * len(BLOB))
    finally:
        store.close()
    reopened = MvccStore(tmp_path / "kv.db")
    try:
        assert reopened.range(pb.RangeRequest(key=b"k", range_end=b"l")).count == ROWS
    finally:
        reopened.close()


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    ckpt = WalCheckpointer(path, interval=3600)
    try:
        ckpt.checkpoint()  # logs a warning, creates nothing
    finally:
        ckpt.stop()
    assert not path.exists()
