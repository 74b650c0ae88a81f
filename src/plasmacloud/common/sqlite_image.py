"""A SQLite database as one file image, read without stalling the writer.

Both state machines (Chainfire's MVCC store, FlareDB's store) hand the Raft engine their
whole database as a snapshot. Reading a large file takes long enough to miss heartbeats,
so the state is pinned where the engine asks for it (a read transaction on a connection
of its own: cheap, and in WAL mode it sees exactly the last commit while the writer goes
on) and the pages are read later, on a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path


def standalone(serialized: bytes) -> bytes:
    """A serialized database as a lone file image: header bytes 18/19 say "WAL mode", a
    file without its WAL must be a rollback-journal database (joined from views: one
    copy, where slicing bytes made two)."""
    image = memoryview(serialized)
    return b"".join((image[:18], b"\x01\x01", image[20:]))


def pin_image(path: Path) -> Callable[[], bytes]:
    """Pin the committed state of the WAL-mode database at ``path`` now; the returned
    function (callable once, from any thread) reads that state as a file image."""
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN")
        # the first read starts the read transaction: from here on this connection sees
        # the database as it is now, whatever the writer commits later
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise

    def read() -> bytes:
        try:
            # sqlite3_serialize reads every page inside the open read transaction, and
            # CPython releases the GIL around it
            return standalone(conn.serialize())
        finally:
            conn.close()

    return read
