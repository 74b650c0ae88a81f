"""Log storage on the real file system: durability, recovery, torn tails, corruption."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from plasmacloud.raft.codec import CONFIG, NORMAL, HardState, LogEntry, SnapshotMeta, encode_members
from plasmacloud.raft.disk import OsDisk
from plasmacloud.raft.storage import CorruptLogError, Storage


def _entries(first: int, count: int, term: int = 1) -> list[LogEntry]:
    return [LogEntry.make(i, term, NORMAL, b"cmd-%d" % i) for i in range(first, first + count)]


def _open(path: Path, segment_bytes: int = 1 << 20) -> Storage:
    s = Storage(OsDisk(), str(path), segment_bytes)
    return s


def _segments(path: Path) -> list[Path]:
    return sorted(path.glob("log-*.seg"))


async def test_append_sync_reopen(tmp_path: Path) -> None:
    s = _open(tmp_path)
    rec = s.open()
    assert rec.hard_state is None and rec.snapshot is None and rec.entries == []
    s.save_hard_state(HardState(3, "n2", {"n1": "h:1"}))
    s.append(_entries(1, 10))
    s.append([LogEntry.make(11, 2, CONFIG, encode_members({"n1": "h:1", "n2": "h:2"}))])
    await s.sync()
    s.close()
    rec = _open(tmp_path).open()
    assert rec.hard_state == HardState(3, "n2", {"n1": "h:1"})
    assert [e.index for e in rec.entries] == list(range(1, 12))
    assert rec.entries[3].data == b"cmd-4" and rec.entries[-1].kind == CONFIG


async def test_torn_tail_is_truncated_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = _open(tmp_path)
    s.open()
    s.append(_entries(1, 5))
    await s.sync()
    s.close()
    seg = _segments(tmp_path)[-1]
    size = seg.stat().st_size
    os.truncate(seg, size - 3)  # the last record lost its final bytes in a crash
    with caplog.at_level(logging.WARNING):
        s2 = _open(tmp_path)
        rec = s2.open()
    assert [e.index for e in rec.entries] == [1, 2, 3, 4]
    assert "torn tail record" in caplog.text
    # the log continues cleanly after the truncation
    s2.append(_entries(5, 2, term=2))
    await s2.sync()
    s2.close()
    rec = _open(tmp_path).open()
    assert [(e.index, e.term) for e in rec.entries][-2:] == [(5, 2), (6, 2)]


async def test_garbled_last_record_is_a_torn_write(tmp_path: Path) -> None:
    s = _open(tmp_path)
    s.open()
    s.append(_entries(1, 3))
    await s.sync()
    s.close()
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    assert [e.index for e in _open(tmp_path).open().entries] == [1, 2]


async def test_corruption_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    s = _open(tmp_path)
    s.open()
    s.append(_entries(1, 5))
    await s.sync()
    s.close()
    seg = _segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[30] ^= 0xFF  # inside the first record, with four good records after it
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="not a torn write"):
        _open(tmp_path).open()


async def test_truncate_suffix_then_append(tmp_path: Path) -> None:
    s = _open(tmp_path, segment_bytes=200)  # several segments
    s.open()
    for first in range(1, 31, 5):
        s.append(_entries(first, 5))
    await s.sync()
    assert len(_segments(tmp_path)) > 2
    s.truncate_suffix(8)
    s.append(_entries(8, 3, term=2))
    await s.sync()
    s.close()
    rec = _open(tmp_path, 200).open()
    assert [e.index for e in rec.entries] == list(range(1, 11))
    assert [e.term for e in rec.entries[7:]] == [2, 2, 2]


async def test_snapshot_compacts_segments_and_recovers(tmp_path: Path) -> None:
    s = _open(tmp_path, segment_bytes=200)
    s.open()
    for first in range(1, 41, 5):
        s.append(_entries(first, 5))
    await s.sync()
    before = len(_segments(tmp_path))
    await s.save_snapshot(SnapshotMeta(30, 1, {"n1": "h:1"}), lambda: b"state@30")
    s.append(_entries(41, 2))
    await s.sync()
    s.close()
    assert len(_segments(tmp_path)) < before
    s2 = _open(tmp_path, 200)
    rec = s2.open()
    assert rec.snapshot == SnapshotMeta(30, 1, {"n1": "h:1"})
    assert [e.index for e in rec.entries] == list(range(31, 43))
    assert s2.read_snapshot() == (rec.snapshot, b"state@30")


async def test_reset_after_installing_a_snapshot(tmp_path: Path) -> None:
    s = _open(tmp_path)
    s.open()
    s.append(_entries(1, 5))
    await s.sync()
    s.write_snapshot(SnapshotMeta(100, 7, {}), b"big")
    s.reset(101)
    s.append(_entries(101, 2, term=7))
    await s.sync()
    s.close()
    rec = _open(tmp_path).open()
    assert rec.snapshot is not None and rec.snapshot.index == 100
    assert [e.index for e in rec.entries] == [101, 102]


async def test_log_that_does_not_continue_the_snapshot_is_discarded(tmp_path: Path) -> None:
    """Crash between writing a received snapshot and resetting the log: the old log (which
    conflicts with the snapshot) must not be trusted."""
    s = _open(tmp_path)
    s.open()
    s.append(_entries(1, 5, term=1))
    await s.sync()
    s.write_snapshot(SnapshotMeta(3, 9, {}), b"snap")  # term 9 at index 3: conflicts
    s.close()
    rec = _open(tmp_path).open()
    assert rec.entries == []
