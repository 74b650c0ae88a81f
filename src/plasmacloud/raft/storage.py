"""Durable Raft state in a data directory: log segments, hard state, snapshot.

Layout::

    hardstate                     term, vote and the bootstrap member list (atomic replace)
    snapshot                      last snapshot: index, term, members, state-machine bytes
    log-<first index>.seg         append-only segments of CRC'd records (codec.encode_record)

Appends go to the page cache immediately (:meth:`Storage.append`); :meth:`Storage.sync`
makes them durable with one ``fdatasync`` per batch. Every entry after the snapshot is also
kept in memory by the node, so the log files are only read back at recovery. A record that
fails its CRC at the end of the last segment is a torn write from a crash: it is truncated
and logged. A bad record anywhere else is corruption and refuses to start.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from plasmacloud.raft.codec import (
    REC_HEADER,
    CodecError,
    HardState,
    LogEntry,
    SnapshotMeta,
    decode_members,
    decode_record,
    encode_members,
)
from plasmacloud.raft.disk import AppendFile, Disk

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024
_HARDSTATE = "hardstate"
_SNAPSHOT = "snapshot"
_HS_MAGIC = b"RHS1"
_SNAP_MAGIC = b"RSN1"
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class CorruptLogError(RuntimeError):
    """The on-disk state is damaged somewhere a crash cannot explain; refuse to start."""


@dataclass(slots=True)
class Recovered:
    hard_state: HardState | None
    snapshot: SnapshotMeta | None
    entries: list[LogEntry]


@dataclass(slots=True)
class _Segment:
    first_index: int
    path: str
    offsets: list[int] = field(default_factory=list)  # start of each record
    size: int = 0


def _seg_name(first_index: int) -> str:
    return f"log-{first_index:020d}.seg"


def _with_crc(magic: bytes, body: bytes) -> bytes:
    return magic + _U32.pack(zlib.crc32(body)) + body


def _check_crc(magic: bytes, blob: bytes, what: str) -> bytes:
    if len(blob) < 8 or blob[:4] != magic:
        raise CorruptLogError(f"{what}: bad magic or too short ({len(blob)} bytes)")
    (crc,) = _U32.unpack_from(blob, 4)
    body = blob[8:]
    if zlib.crc32(body) != crc:
        raise CorruptLogError(f"{what}: CRC mismatch")
    return body


class Storage:
    """The log, hard state and snapshot of one node in ``directory`` on ``disk``."""

    def __init__(self, disk: Disk, directory: str, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.disk = disk
        self.dir = directory
        self.segment_bytes = segment_bytes
        self._segs: list[_Segment] = []
        self._file: AppendFile | None = None  # open handle of self._segs[-1]
        self._retired: list[AppendFile] = []  # to sync once more, then close
        self._roll_next = False

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # --- recovery ------------------------------------------------------------------------

    def open(self) -> Recovered:
        """Read everything back, truncating a torn tail record; opens the log for appends."""
        self.disk.makedirs(self.dir)
        hard = self._read_hard_state()
        snap = self._read_snapshot_meta()
        names = [n for n in self.disk.listdir(self.dir) if n.startswith("log-")]
        names = [n for n in names if n.endswith(".seg")]
        blobs = [self.disk.read(self._path(n)) for n in names]
        # a crash can tear only the newest write: the last segment holding any data (older
        # segments were synced before a newer one got data; the newest may still be empty)
        tail = max((i for i, b in enumerate(blobs) if b), default=0)
        entries: list[LogEntry] = []
        for i, (name, data) in enumerate(zip(names, blobs, strict=True)):
            self._segs.append(self._load_segment(name, data, entries, last=i >= tail))
        snap_index = snap.index if snap else 0
        entries = self._drop_snapshotted(entries, snap)
        if not self._segs:
            self._segs.append(_Segment(snap_index + 1, self._path(_seg_name(snap_index + 1))))
        self._file = self.disk.open_append(self._segs[-1].path)
        self.disk.sync_dir(self.dir)
        return Recovered(hard, snap, entries)

    def _read_hard_state(self) -> HardState | None:
        path = self._path(_HARDSTATE)
        if not self.disk.exists(path):
            return None
        body = _check_crc(_HS_MAGIC, self.disk.read(path), path)
        try:
            (term,) = _U64.unpack_from(body, 0)
            (n,) = struct.unpack_from("<H", body, 8)
            vote = body[10 : 10 + n].decode()
            members, _ = decode_members(body, 10 + n)
        except (struct.error, CodecError, UnicodeDecodeError) as exc:
            raise CorruptLogError(f"{path}: {exc}") from exc
        return HardState(term, vote, members)

    def _read_snapshot_meta(self) -> SnapshotMeta | None:
        meta, _ = self._read_snapshot_file()
        return meta

    def _read_snapshot_file(self) -> tuple[SnapshotMeta | None, bytes]:
        path = self._path(_SNAPSHOT)
        if not self.disk.exists(path):
            return None, b""
        body = _check_crc(_SNAP_MAGIC, self.disk.read(path), path)
        try:
            index, term = struct.unpack_from("<QQ", body, 0)
            members, pos = decode_members(body, 16)
        except (struct.error, CodecError) as exc:
            raise CorruptLogError(f"{path}: {exc}") from exc
        return SnapshotMeta(index, term, members), body[pos:]

    def read_snapshot(self) -> tuple[SnapshotMeta | None, bytes]:
        """The stored snapshot's metadata and state-machine bytes (None if there is none)."""
        return self._read_snapshot_file()

    def _load_segment(
        self, name: str, data: bytes, entries: list[LogEntry], last: bool
    ) -> _Segment:
        path = self._path(name)
        try:
            first = int(name[4:-4])
        except ValueError as exc:
            raise CorruptLogError(f"{path}: unexpected segment file name") from exc
        seg = _Segment(first, path)
        pos = 0
        expected = first
        while pos < len(data):
            try:
                entry, end = decode_record(data, pos)
                if entry.index != expected:
                    raise CodecError(f"record index {entry.index}, expected {expected}")
            except CodecError as exc:
                if not (last and self._is_torn_tail(data, pos)):
                    raise CorruptLogError(
                        f"{path}: corrupt record at offset {pos} ({exc}) with valid data after "
                        "it; this is not a torn write. Restore this node from a peer (wipe its "
                        "data dir and re-add it) instead of trusting this log."
                    ) from exc
                log.warning(
                    "%s: torn tail record at offset %d (%s); truncating %d bytes left by a crash",
                    path,
                    pos,
                    exc,
                    len(data) - pos,
                )
                f = self.disk.open_append(path)
                f.truncate(pos)
                f.close()
                break
            if entries and entries[-1].index + 1 != entry.index:
                raise CorruptLogError(
                    f"{path}: starts at index {entry.index} but the previous segment ends at "
                    f"{entries[-1].index}"
                )
            seg.offsets.append(pos)
            entries.append(entry)
            expected += 1
            pos = end
        seg.size = pos
        return seg

    @staticmethod
    def _is_torn_tail(data: bytes, pos: int) -> bool:
        """A crash can only damage the end: the bad record is incomplete, the last one, or
        followed by nothing but zeros (blocks allocated but never written)."""
        try:
            decode_record(data, pos)
        except CodecError as exc:
            if "truncated" in str(exc) or "claims" in str(exc):
                return True
        (length,) = _U32.unpack_from(data, pos + 4)
        end = pos + REC_HEADER + length
        return end >= len(data) or not data[pos:].strip(b"\0")

    def _drop_snapshotted(
        self, entries: list[LogEntry], snap: SnapshotMeta | None
    ) -> list[LogEntry]:
        """Entries after the snapshot; a log that does not continue it is discarded."""
        if snap is None or not entries:
            return entries
        first = entries[0].index
        if first <= snap.index <= entries[-1].index:
            if entries[snap.index - first].term == snap.term:
                return entries[snap.index - first + 1 :]
        elif first == snap.index + 1:
            return entries
        elif entries[-1].index < snap.index:
            self._remove_segments(0)
            return []
        log.warning(
            "%s: log does not continue snapshot %d/%d (a crash while installing a snapshot); "
            "discarding the log after it",
            self.dir,
            snap.index,
            snap.term,
        )
        self._remove_segments(0)
        return []

    # --- writes --------------------------------------------------------------------------

    def save_hard_state(self, hs: HardState) -> None:
        """Durably record term/vote (blocking: happens once per election, never per write)."""
        body = _U64.pack(hs.term)
        vote = hs.vote.encode()
        body += struct.pack("<H", len(vote)) + vote + encode_members(hs.members)
        self.disk.write_atomic(self._path(_HARDSTATE), _with_crc(_HS_MAGIC, body))

    def append(self, entries: list[LogEntry]) -> None:
        """Write ``entries`` (which continue the log) to the page cache; see :meth:`sync`."""
        if not entries:
            return
        seg = self._segs[-1]
        if seg.offsets and (self._roll_next or seg.size >= self.segment_bytes):
            seg = self._roll(entries[0].index)
        elif not seg.offsets and seg.first_index != entries[0].index:
            seg = self._replace_empty(entries[0].index)
        assert self._file is not None
        pos = seg.size
        for e in entries:
            seg.offsets.append(pos)
            pos += len(e.raw)
        self._file.write(b"".join(e.raw for e in entries))
        seg.size = pos

    def _roll(self, first_index: int) -> _Segment:
        assert self._file is not None
        # finish the old segment on disk before the new one gets data: then only the newest
        # non-empty segment can hold a torn write, and damage anywhere else is corruption
        self._file.sync()
        self._retired.append(self._file)
        seg = _Segment(first_index, self._path(_seg_name(first_index)))
        self._segs.append(seg)
        self._file = self.disk.open_append(seg.path)
        self.disk.sync_dir(self.dir)
        self._roll_next = False
        return seg

    def _replace_empty(self, first_index: int) -> _Segment:
        """The current segment is empty but named for another index: start the right one."""
        old = self._segs.pop()
        self.disk.remove(old.path)
        return self._roll(first_index)

    def truncate_suffix(self, index: int) -> None:
        """Remove entries >= ``index`` (never called for committed entries)."""
        while len(self._segs) > 1 and self._segs[-1].first_index >= index:
            seg = self._segs.pop()
            assert self._file is not None
            self._retired.append(self._file)
            self.disk.remove(seg.path)
            self._file = self.disk.open_append(self._segs[-1].path)
        seg = self._segs[-1]
        keep = max(0, index - seg.first_index)
        if keep < len(seg.offsets):
            seg.size = seg.offsets[keep]
            del seg.offsets[keep:]
            assert self._file is not None
            self._file.truncate(seg.size)

    async def sync(self) -> None:
        """``fdatasync`` everything appended so far (one call per batch of appends)."""
        files = self.files_to_sync()
        await self.disk.datasync(files)
        self.close_synced(files)

    def files_to_sync(self) -> list[AppendFile]:
        """The files a sync of everything appended so far covers (for a caller that syncs
        them itself, like the simulation; then :meth:`close_synced`)."""
        assert self._file is not None
        return [*self._retired, self._file]

    def close_synced(self, files: list[AppendFile]) -> None:
        """Close the retired segments among ``files``, which a sync has just covered."""
        for f in files:
            if f in self._retired:
                f.close()
                self._retired.remove(f)

    @staticmethod
    def _snapshot_blob(meta: SnapshotMeta, data: bytes) -> bytes:
        body = struct.pack("<QQ", meta.index, meta.term) + encode_members(meta.members) + data
        return _with_crc(_SNAP_MAGIC, body)

    async def save_snapshot(self, meta: SnapshotMeta, read: Callable[[], bytes]) -> int:
        """Durably store a local snapshot of the state ``read()`` returns, reading it and
        writing it off the loop; then delete the log segments it covers. Returns its size."""
        size = 0

        def blob() -> bytes:
            nonlocal size
            data = read()
            size = len(data)
            return self._snapshot_blob(meta, data)

        await self.disk.write_atomic_async(self._path(_SNAPSHOT), blob)
        self.compact(meta.index)
        return size

    def write_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Durably store a snapshot received from the leader (the caller resets the log)."""
        self.disk.write_atomic(self._path(_SNAPSHOT), self._snapshot_blob(meta, data))

    def compact(self, index: int) -> None:
        """Delete whole segments whose entries are all <= ``index``; roll the current one."""
        while len(self._segs) > 1 and self._segs[1].first_index <= index + 1:
            seg = self._segs.pop(0)
            self.disk.remove(seg.path)
        if self._segs[-1].first_index <= index:
            self._roll_next = True

    def reset(self, next_index: int) -> None:
        """Drop the whole log (a snapshot replaced it); the next entry is ``next_index``."""
        self._remove_segments(next_index)

    def _remove_segments(self, next_index: int) -> None:
        if self._file is not None:
            self._retired.append(self._file)
            self._file = None
        for seg in self._segs:
            self.disk.remove(seg.path)
        self._segs = []
        if next_index:
            seg = _Segment(next_index, self._path(_seg_name(next_index)))
            self._segs.append(seg)
            self._file = self.disk.open_append(seg.path)
            self.disk.sync_dir(self.dir)

    def close(self) -> None:
        """Close files (without syncing: anything not synced was never acknowledged) and
        the disk's background work (the syncer thread)."""
        self.disk.close()
        for f in self._retired:
            f.close()
        self._retired.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
