"""SQLite WAL checkpoints off the event loop.

In WAL mode SQLite copies the log back into the database ("checkpoint") from inside the
COMMIT that crosses ``wal_autocheckpoint`` pages, and with ``synchronous=NORMAL`` that
checkpoint fsyncs the database file. Chainfire commits from the event loop (one
transaction per applied Raft batch), so every few hundred batches a write stalled the
whole node -- gRPC, replication, heartbeats -- for a disk flush (tens of ms on a busy
disk). Here a daemon thread with its own connection runs passive checkpoints instead:
they never block the writer, and sqlite3 releases the GIL while it works.

Durability is unchanged: the same pages are synced by the same checkpoint, only on
another thread; a commit that is not yet checkpointed is in the WAL (and, before that,
in the fsynced Raft log the engine replays from ``applied_index``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 0.5  # seconds between passive checkpoints


class WalCheckpointer:
    """Checkpoints one database file every ``interval`` seconds from a daemon thread.

    The main connection must run with ``PRAGMA wal_autocheckpoint=0``. Hold :attr:`lock`
    while replacing or closing the database file, so no checkpoint runs on it meanwhile.
    """

    def __init__(self, path: Path, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"wal-checkpoint:{path.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self.lock:
                if self._stop.is_set():
                    return
                self.checkpoint()

    def checkpoint(self) -> None:
        """One passive checkpoint now (copies what no reader still needs; never waits)."""
        try:
            # mode=rw: never create a database where the store's file has gone
            uri = self.path.resolve().as_uri() + "?mode=rw"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint of %s failed: %s", self.path, exc)

    def stop(self) -> None:
        """Stop the thread (after any checkpoint in progress) and wait for it."""
        self._stop.set()
        self._thread.join()
