"""The file-system operations the engine's storage needs, behind a small interface.

:class:`OsDisk` is the real thing (``os.write`` into the page cache, ``os.fdatasync`` in a
worker thread so the event loop keeps replicating while the disk flushes); the simulation
(``plasmacloud.raft.sim``) provides a disk that forgets un-synced writes when it "crashes".
"""

from __future__ import annotations

import asyncio
import os
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


class OsDisk:
    """The real file system."""

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
        await asyncio.get_running_loop().run_in_executor(None, _fdatasync_all, os_files)

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
