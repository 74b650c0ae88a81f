"""OsDisk's syncer thread: group commit, durability order, errors, no leaked threads."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plasmacloud.raft.codec import NORMAL, LogEntry
from plasmacloud.raft.disk import OsDisk, OsFile
from plasmacloud.raft.storage import Storage

SYNCER = "raft-fdatasync"


class GatedFdatasync:
    """Stands in for ``os.fdatasync``: records each call's fd and blocks it until the test
    lets it finish, so a test decides exactly when each pass ends."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.entered = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)
        self.fail_next = False
        self.opened = False

    def __call__(self, fd: int) -> None:
        self.calls.append(fd)
        self.entered.release()
        if not self.opened:
            self.gate.acquire()
        if self.fail_next:
            self.fail_next = False
            raise OSError(errno.EIO, "Input/output error")

    async def wait_entered(self) -> None:
        """Until the syncer thread is inside the next fdatasync call."""
        assert await asyncio.to_thread(self.entered.acquire, timeout=30)

    async def let_one_through(self) -> None:
        """Wait for the next fdatasync call and let it finish."""
        await self.wait_entered()
        self.gate.release()

    async def busy(self, disk: OsDisk, f: OsFile) -> asyncio.Task[None]:
        """Start a sync of ``f`` and return once its pass is inside fdatasync."""
        task = asyncio.create_task(disk.datasync([f]))
        await self.wait_entered()
        return task

    def open(self) -> None:
        """Let every call through (so a failed test's disk can close)."""
        self.opened = True
        for _ in range(100):
            self.gate.release()


@dataclass
class Rig:
    disk: OsDisk
    fdatasync: GatedFdatasync
    a: OsFile
    b: OsFile


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Rig]:
    """A disk whose fdatasync calls the test lets through one by one, and two files."""
    fake = GatedFdatasync()
    monkeypatch.setattr(os, "fdatasync", fake)
    rig = Rig(OsDisk(), fake, OsFile(str(tmp_path / "a")), OsFile(str(tmp_path / "b")))
    yield rig
    fake.open()
    rig.disk.close()
    rig.a.close()
    rig.b.close()


async def _queued(disk: OsDisk, *requests: list[OsFile]) -> list[asyncio.Task[None]]:
    """One sync task per list of files, each with its request queued on return."""
    tasks = [asyncio.create_task(disk.datasync(files)) for files in requests]
    await asyncio.sleep(0)
    return tasks


def _syncers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == SYNCER)


async def test_requests_queued_during_a_pass_share_the_next_one(
    rig: Rig,
) -> None:
    disk, fdatasync, a, b = rig.disk, rig.fdatasync, rig.a, rig.b
    first = await fdatasync.busy(disk, a)  # pass 1 (file a) is running
    waiting = await _queued(disk, [a], [b], [a, b], [b], [a])
    await asyncio.sleep(0.05)  # a syncer that settled them early would have done it by now
    assert not first.done() and not any(t.done() for t in waiting)
    fdatasync.gate.release()
    await first
    # pass 2 covers the union of the five requests' files, once each, in one pass
    await fdatasync.wait_entered()
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in waiting)  # not released before their covering pass
    fdatasync.gate.release()
    await fdatasync.wait_entered()
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in waiting)
    fdatasync.gate.release()
    await asyncio.gather(*waiting)
    assert fdatasync.calls == [a.fd, a.fd, b.fd]  # 6 requests, 2 passes, 3 fdatasync calls


async def test_an_fdatasync_error_reaches_every_waiter_of_its_pass(
    rig: Rig,
) -> None:
    disk, fdatasync, a = rig.disk, rig.fdatasync, rig.a
    first = await fdatasync.busy(disk, a)
    failing = await _queued(disk, [a], [a], [a])
    fdatasync.gate.release()
    await first  # its own pass succeeded
    fdatasync.fail_next = True
    await fdatasync.let_one_through()
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, OSError) and r.errno == errno.EIO for r in results), results
    # the thread survives the error: the next sync is served by a new pass
    after = asyncio.create_task(disk.datasync([a]))
    await fdatasync.let_one_through()
    await after
    assert len(fdatasync.calls) == 3


async def test_a_cancelled_waiter_does_not_disturb_the_others(
    rig: Rig,
) -> None:
    disk, fdatasync, a = rig.disk, rig.fdatasync, rig.a
    first = await fdatasync.busy(disk, a)
    first.cancel()
    (second,) = await _queued(disk, [a])
    fdatasync.gate.release()
    await fdatasync.let_one_through()
    await second
    assert first.cancelled()


async def test_synced_data_is_on_disk(tmp_path: Path) -> None:
    disk = OsDisk()
    a = OsFile(str(tmp_path / "a"))
    a.write(b"hello")
    await asyncio.gather(*(disk.datasync([a]) for _ in range(20)))
    disk.close()
    a.close()
    assert (tmp_path / "a").read_bytes() == b"hello"


async def test_close_stops_the_thread_and_logs_do_not_accumulate_threads(tmp_path: Path) -> None:
    before = _syncers()
    for i in range(20):
        s = Storage(OsDisk(), str(tmp_path / f"log{i}"))
        s.open()
        s.append([LogEntry.make(1, 1, NORMAL, b"x")])
        await s.sync()
        assert _syncers() == before + 1  # one per open log, started by its first sync
        s.close()
        assert _syncers() == before
    # a disk reused after close starts a new thread for its next sync
    d = OsDisk()
    f = OsFile(str(tmp_path / "again"))
    await d.datasync([f])
    d.close()
    await d.datasync([f])
    assert _syncers() == before + 1
    d.close()
    f.close()
    assert _syncers() == before
