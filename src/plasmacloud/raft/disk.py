"""The file-system operations the engine's storage needs, behind a small interface.

:class:`OsDisk` is the real thing (``os.write`` into the page cache, ``os.fdatasync`` on a
syncer thread so the event loop keeps replicating while the disk flushes); the simulation
(``plasmacloud.raft.sim``) provides a disk that forgets un-synced writes when it "crashes".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol


class AppendFile(Protocol):
    """A file opened for appending."""

    def write(self, data: bytes) -> None: ...

    def truncate(self, size: int) -> None: ...

    def size(self) -> int: ...

    def sync(self) -> None:
        """Blocking ``fdatasync`` (rare: when a segment is finished)."""
        ...

    def close(self) -> None: ...


class Disk(Protocol):
    """Everything :class:`plasmacloud.raft.storage.Storage` does to files."""

    def makedirs(self, path: str) -> None: ...

    def listdir(self, path: str) -> list[str]: ...

    def read(self, path: str) -> bytes: ...

    def exists(self, path: str) -> bool: ...

    def remove(self, path: str) -> None: ...

    def open_append(self, path: str) -> AppendFile: ...

    def sync_dir(self, path: str) -> None: ...

    async def datasync(self, files: Sequence[AppendFile]) -> None:
        """Make everything written to ``files`` so far durable."""
        ...

    def write_atomic(self, path: str, data: bytes) -> None:
        """Durably replace ``path`` with ``data`` (temp file, fsync, rename, fsync dir)."""
        ...

    async def write_atomic_async(self, path: str, produce: Callable[[], bytes]) -> None:
        """:meth:`write_atomic` of what ``produce()`` returns, both off the event loop (a
        snapshot: reading a large state out takes longer than an election timeout)."""
        ...

    def close(self) -> None:
        """Stop any background work (called when the log closes; a later
        :meth:`datasync` may start it again)."""
        ...


class OsFile:
    """An append-only file descriptor (no Python buffering: a write is one syscall)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fdatasync_all(files: Sequence[OsFile]) -> None:
    for f in files:
        if f.fd >= 0:
            os.fdatasync(f.fd)


_Request = tuple[list[OsFile], "asyncio.Future[None]"]


def _settle(futs: list[asyncio.Future[None]], error: Exception | None) -> None:
    for fut in futs:
        if fut.done():  # its waiter was cancelled
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


class _Syncer:
    """One long-lived thread that fdatasyncs for the event loop (group commit).

    A hand-off costs one queue put and, per pass, one ``call_soon_threadsafe`` per loop
    woken; ``run_in_executor`` added a ``ThreadPoolExecutor.submit`` (work item, lock,
    thread-count check) and two chained futures per sync, on the loop thread. Every
    request queued when the thread wakes is served by one pass over the union of their
    files: each pass starts after all its requests were queued, so it covers everything
    they had written. An error reaches every waiter of the pass that hit it."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="raft-fdatasync", daemon=True)
        self._thread.start()

    def request(self, files: list[OsFile], fut: asyncio.Future[None]) -> None:
        self._requests.put((files, fut))

    def stop(self) -> None:
        """Serve what is queued, then end the thread (blocks until it has)."""
        self._requests.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._requests.get()]
            while True:
                try:
                    batch.append(self._requests.get_nowait())
                except queue.Empty:
                    break
            requests = [r for r in batch if r is not None]
            if requests:
                self._pass(requests)
            if len(requests) < len(batch):
                return

    @staticmethod
    def _pass(requests: list[_Request]) -> None:
        files = list(dict.fromkeys(f for fs, _ in requests for f in fs))
        error: Exception | None = None
        try:
            _fdatasync_all(files)
        except Exception as exc:  # the waiters act on it (a node halts on a failed fsync)
            error = exc
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for _, fut in requests:
            by_loop.setdefault(fut.get_loop(), []).append(fut)
        for loop, futs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, futs, error)


class OsDisk:
    """The real file system."""

    def __init__(self) -> None:
        self._syncer: _Syncer | None = None  # started by the first datasync

    def makedirs(self, path: str) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def remove(self, path: str) -> None:
        os.unlink(path)

    def open_append(self, path: str) -> AppendFile:
        return OsFile(path)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def datasync(self, files: Sequence[AppendFile]) -> None:
        os_files = [f for f in files if isinstance(f, OsFile)]
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._syncer is None:
            self._syncer = _Syncer()
        self._syncer.request(os_files, fut)
        await fut

    def close(self) -> None:
        """End the syncer thread, once the syncs already asked for are done (blocks the
        caller for at most those: a log closes only after its last sync was awaited)."""
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            syncer.stop()

    def write_atomic(self, path: str, data: bytes) -> None:
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self.sync_dir(os.path.dirname(path) or ".")

    async def write_atomic_async(self, path: str, produce: Callable[[], bytes]) -> None:
        await asyncio.to_thread(lambda: self.write_atomic(path, produce()))
