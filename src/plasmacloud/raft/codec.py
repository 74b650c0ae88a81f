"""Binary encoding of log records and peer messages (struct-packed, CRC-checked, no pickle).

A *log record* is the unit on disk and on the wire: the same bytes the leader writes to its
segment file travel inside AppendEntries and are written unchanged by followers, so an entry
is encoded exactly once. A *frame* wraps one peer message: ``u32 length | u32 crc32 | payload``.
Decoding never trusts the input: every length is bounds-checked and any inconsistency raises
:class:`CodecError`, which the transport turns into "close this connection".
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

# kind of a log entry: NORMAL entries go to the state machine, the others are the engine's own
NORMAL = 0
NOOP = 1
CONFIG = 2
_KINDS = (NORMAL, NOOP, CONFIG)

# record: u32 crc (of everything after it) | u32 data length | u64 index | u64 term | u8 kind
_REC = struct.Struct("<IIQQB")
REC_HEADER = _REC.size
_REC_BODY = struct.Struct("<IQQB")  # the part the crc covers (before the data)

MAX_FRAME = 64 * 1024 * 1024  # larger frames are rejected: a garbage length must not allocate
_FRAME = struct.Struct("<II")
FRAME_HEADER = _FRAME.size


class CodecError(ValueError):
    """Bytes that are not a valid record, frame or message."""


@dataclass(slots=True)
class LogEntry:
    """One log entry; ``raw`` is its encoded record (reused for disk and wire)."""

    index: int
    term: int
    kind: int
    data: bytes
    raw: bytes = b""

    @classmethod
    def make(cls, index: int, term: int, kind: int, data: bytes) -> LogEntry:
        """Build an entry and encode its record once."""
        return cls(index, term, kind, data, encode_record(index, term, kind, data))


def encode_record(index: int, term: int, kind: int, data: bytes) -> bytes:
    body = _REC_BODY.pack(len(data), index, term, kind)
    crc = zlib.crc32(data, zlib.crc32(body))
    return struct.pack("<I", crc) + body + data


def decode_record(buf: bytes | memoryview, pos: int) -> tuple[LogEntry, int]:
    """Decode the record at ``pos``; returns it and the offset just past it."""
    if pos + REC_HEADER > len(buf):
        raise CodecError(f"truncated record header at offset {pos}")
    crc, length, index, term, kind = _REC.unpack_from(buf, pos)
    end = pos + REC_HEADER + length
    if end > len(buf):
        raise CodecError(f"record at offset {pos} claims {length} bytes, only {len(buf) - pos}")
    body = bytes(buf[pos + 4 : end])
    if zlib.crc32(body) != crc:
        raise CodecError(f"record CRC mismatch at offset {pos}")
    if kind not in _KINDS:
        raise CodecError(f"unknown record kind {kind} at offset {pos}")
    data = body[REC_HEADER - 4 :]
    return LogEntry(index, term, kind, data, bytes(buf[pos:end])), end


def decode_records(buf: bytes | memoryview) -> list[LogEntry]:
    """Decode a concatenation of records (the entries of one AppendEntries)."""
    out: list[LogEntry] = []
    pos = 0
    while pos < len(buf):
        entry, pos = decode_record(buf, pos)
        out.append(entry)
    return out


# --- member configuration ------------------------------------------------------------


def encode_members(members: dict[str, str]) -> bytes:
    parts = [struct.pack("<H", len(members))]
    for node_id, address in members.items():
        parts.append(_pack_str(node_id))
        parts.append(_pack_str(address))
    return b"".join(parts)


def decode_members(buf: bytes | memoryview, pos: int = 0) -> tuple[dict[str, str], int]:
    (count,), pos = _unpack(buf, pos, _H)
    members: dict[str, str] = {}
    for _ in range(count):
        node_id, pos = _unpack_str(buf, pos)
        address, pos = _unpack_str(buf, pos)
        members[node_id] = address
    return members, pos


# --- peer messages -------------------------------------------------------------------


@dataclass(slots=True)
class HardState:
    """What a node must remember across restarts besides its log (stored by storage.py)."""

    term: int = 0
    vote: str = ""
    members: dict[str, str] = field(default_factory=dict)  # bootstrap config (index 0)


@dataclass(slots=True)
class SnapshotMeta:
    index: int
    term: int
    members: dict[str, str]


@dataclass(slots=True)
class AppendEntries:
    term: int
    src: str
    prev_index: int
    prev_term: int
    commit: int
    entries: list[LogEntry] = field(default_factory=list)


@dataclass(slots=True)
class AppendResp:
    term: int
    src: str
    success: bool
    index: int  # success: the follower's match index; failure: the rejected prev_index
    hint: int  # failure: the leader should retry from hint + 1


@dataclass(slots=True)
class Heartbeat:
    term: int
    src: str
    commit: int
    seq: int


@dataclass(slots=True)
class HeartbeatResp:
    term: int
    src: str
    seq: int


@dataclass(slots=True)
class VoteReq:
    term: int
    src: str
    last_index: int
    last_term: int
    pre: bool
    transfer: bool = False  # the leader handed over: voters skip the leader-lease check


@dataclass(slots=True)
class TimeoutNow:
    """Leadership transfer: the leader tells a caught-up follower to campaign now."""

    term: int
    src: str


@dataclass(slots=True)
class VoteResp:
    term: int
    src: str
    granted: bool
    pre: bool


@dataclass(slots=True)
class SnapshotChunk:
    term: int
    src: str
    index: int
    snap_term: int
    offset: int
    total: int
    members: dict[str, str]
    data: bytes


@dataclass(slots=True)
class SnapshotResp:
    term: int
    src: str
    index: int
    next_offset: int  # bytes received so far; == total once installed


@dataclass(slots=True)
class Propose:
    """Proposals a follower forwards to the leader (one message per batch)."""

    term: int
    src: str
    req_id: int
    kind: int
    datas: list[bytes]


@dataclass(slots=True)
class ProposeResp:
    term: int
    src: str
    req_id: int
    first_index: int  # 0 = rejected (see error)
    entry_term: int
    error: int


@dataclass(slots=True)
class ReadReq:
    term: int
    src: str
    req_id: int


@dataclass(slots=True)
class ReadResp:
    term: int
    src: str
    req_id: int
    index: int
    error: int


Message = (
    AppendEntries
    | AppendResp
    | Heartbeat
    | HeartbeatResp
    | VoteReq
    | TimeoutNow
    | VoteResp
    | SnapshotChunk
    | SnapshotResp
    | Propose
    | ProposeResp
    | ReadReq
    | ReadResp
)

# error codes in ProposeResp / ReadResp
ERR_NONE = 0
ERR_NOT_LEADER = 1
ERR_CONFIG_BUSY = 2
ERR_INVALID = 3

_H = struct.Struct("<H")
_Q = struct.Struct("<Q")
_QQ = struct.Struct("<QQ")
_QQQ = struct.Struct("<QQQ")
_QQQQ = struct.Struct("<QQQQ")
_QQB = struct.Struct("<QQB")
_QBQQ = struct.Struct("<QBQQ")
_QQQQB = struct.Struct("<QQQQB")
_I = struct.Struct("<I")


def _pack_str(s: str) -> bytes:
    b = s.encode()
    if len(b) > 0xFFFF:
        raise CodecError("string too long")
    return _H.pack(len(b)) + b


def _unpack(buf: bytes | memoryview, pos: int, st: struct.Struct) -> tuple[tuple, int]:
    if pos + st.size > len(buf):
        raise CodecError("truncated message")
    return st.unpack_from(buf, pos), pos + st.size


def _unpack_str(buf: bytes | memoryview, pos: int) -> tuple[str, int]:
    (n,), pos = _unpack(buf, pos, _H)
    if pos + n > len(buf):
        raise CodecError("truncated string")
    try:
        return bytes(buf[pos : pos + n]).decode(), pos + n
    except UnicodeDecodeError as exc:
        raise CodecError("invalid utf-8 string") from exc


def _unpack_bytes(buf: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    (n,), pos = _unpack(buf, pos, _I)
    if pos + n > len(buf):
        raise CodecError("truncated bytes")
    return bytes(buf[pos : pos + n]), pos + n


_TYPE_CODES: dict[type, int] = {
    AppendEntries: 1,
    AppendResp: 2,
    Heartbeat: 3,
    HeartbeatResp: 4,
    VoteReq: 5,
    VoteResp: 6,
    SnapshotChunk: 7,
    SnapshotResp: 8,
    Propose: 9,
    ProposeResp: 10,
    ReadReq: 11,
    ReadResp: 12,
    TimeoutNow: 13,
}


def encode_message(msg: Message) -> bytes:
    """Payload bytes for ``msg`` (without the frame header)."""
    head = bytes([_TYPE_CODES[type(msg)]]) + _Q.pack(msg.term) + _pack_str(msg.src)
    if isinstance(msg, AppendEntries):
        body = _QQQ.pack(msg.prev_index, msg.prev_term, msg.commit)
        return head + body + b"".join(e.raw for e in msg.entries)
    if isinstance(msg, AppendResp):
        return head + _QQB.pack(msg.index, msg.hint, msg.success)
    if isinstance(msg, Heartbeat):
        return head + _QQ.pack(msg.commit, msg.seq)
    if isinstance(msg, HeartbeatResp):
        return head + _Q.pack(msg.seq)
    if isinstance(msg, VoteReq):
        return head + _QQB.pack(msg.last_index, msg.last_term, msg.pre | msg.transfer << 1)
    if isinstance(msg, VoteResp):
        return head + bytes([msg.granted, msg.pre])
    if isinstance(msg, SnapshotChunk):
        body = _QQQQ.pack(msg.index, msg.snap_term, msg.offset, msg.total)
        return head + body + encode_members(msg.members) + _I.pack(len(msg.data)) + msg.data
    if isinstance(msg, SnapshotResp):
        return head + _QQ.pack(msg.index, msg.next_offset)
    if isinstance(msg, Propose):
        parts = [head, _QBQQ.pack(msg.req_id, msg.kind, len(msg.datas), 0)]
        for d in msg.datas:
            parts.append(_I.pack(len(d)))
            parts.append(d)
        return b"".join(parts)
    if isinstance(msg, ProposeResp):
        return head + _QQQQB.pack(msg.req_id, msg.first_index, msg.entry_term, 0, msg.error)
    if isinstance(msg, ReadReq):
        return head + _Q.pack(msg.req_id)
    if isinstance(msg, ReadResp):
        return head + _QQB.pack(msg.req_id, msg.index, msg.error)
    if isinstance(msg, TimeoutNow):
        return head
    raise CodecError(f"cannot encode {type(msg).__name__}")


def decode_message(buf: bytes | memoryview) -> Message:
    """Parse a payload; raises :class:`CodecError` on anything malformed."""
    if not buf:
        raise CodecError("empty message")
    code = buf[0]
    (term,), pos = _unpack(buf, 1, _Q)
    src, pos = _unpack_str(buf, pos)
    msg: Message
    if code == 1:
        (prev_index, prev_term, commit), pos = _unpack(buf, pos, _QQQ)
        msg = AppendEntries(term, src, prev_index, prev_term, commit, decode_records(buf[pos:]))
        return msg
    if code == 2:
        (index, hint, success), pos = _unpack(buf, pos, _QQB)
        msg = AppendResp(term, src, bool(success), index, hint)
    elif code == 3:
        (commit, seq), pos = _unpack(buf, pos, _QQ)
        msg = Heartbeat(term, src, commit, seq)
    elif code == 4:
        (seq,), pos = _unpack(buf, pos, _Q)
        msg = HeartbeatResp(term, src, seq)
    elif code == 5:
        (last_index, last_term, pre), pos = _unpack(buf, pos, _QQB)
        msg = VoteReq(term, src, last_index, last_term, bool(pre & 1), bool(pre & 2))
    elif code == 6:
        if pos + 2 > len(buf):
            raise CodecError("truncated message")
        msg = VoteResp(term, src, bool(buf[pos]), bool(buf[pos + 1]))
        pos += 2
    elif code == 7:
        (index, snap_term, offset, total), pos = _unpack(buf, pos, _QQQQ)
        members, pos = decode_members(buf, pos)
        data, pos = _unpack_bytes(buf, pos)
        msg = SnapshotChunk(term, src, index, snap_term, offset, total, members, data)
    elif code == 8:
        (index, next_offset), pos = _unpack(buf, pos, _QQ)
        msg = SnapshotResp(term, src, index, next_offset)
    elif code == 9:
        (req_id, kind, count, _), pos = _unpack(buf, pos, _QBQQ)
        if count > len(buf):
            raise CodecError("proposal count larger than the message")
        datas = []
        for _i in range(count):
            d, pos = _unpack_bytes(buf, pos)
            datas.append(d)
        msg = Propose(term, src, req_id, kind, datas)
    elif code == 10:
        (req_id, first, entry_term, _, error), pos = _unpack(buf, pos, _QQQQB)
        msg = ProposeResp(term, src, req_id, first, entry_term, error)
    elif code == 11:
        (req_id,), pos = _unpack(buf, pos, _Q)
        msg = ReadReq(term, src, req_id)
    elif code == 12:
        (req_id, index, error), pos = _unpack(buf, pos, _QQB)
        msg = ReadResp(term, src, req_id, index, error)
    elif code == 13:
        msg = TimeoutNow(term, src)
    else:
        raise CodecError(f"unknown message type {code}")
    if pos != len(buf):
        raise CodecError(f"{len(buf) - pos} trailing bytes after {type(msg).__name__}")
    return msg


def encode_frame(msg: Message) -> bytes:
    """A length-prefixed, CRC-checked frame carrying ``msg``."""
    payload = encode_message(msg)
    if len(payload) > MAX_FRAME:
        raise CodecError(f"message of {len(payload)} bytes exceeds the frame limit")
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_frame_header(header: bytes | bytearray) -> tuple[int, int]:
    """(payload length, crc) from the 8 header bytes; rejects oversized lengths."""
    length, crc = _FRAME.unpack(header)
    if length > MAX_FRAME:
        raise CodecError(f"frame of {length} bytes exceeds the limit of {MAX_FRAME}")
    return length, crc


def check_frame(payload: bytes, crc: int) -> Message:
    """Verify a frame's CRC and decode its message."""
    if zlib.crc32(payload) != crc:
        raise CodecError("frame CRC mismatch")
    return decode_message(payload)
