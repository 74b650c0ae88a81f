"""Wire and record codec: round trips for every message, and garbage never crashes it."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasmacloud.raft.codec import (
    CONFIG,
    MAX_FRAME,
    NORMAL,
    AppendEntries,
    AppendResp,
    CodecError,
    Heartbeat,
    HeartbeatResp,
    LogEntry,
    Message,
    Propose,
    ProposeResp,
    ReadReq,
    ReadResp,
    SnapshotChunk,
    SnapshotResp,
    TimeoutNow,
    VoteReq,
    VoteResp,
    check_frame,
    decode_frame_header,
    decode_members,
    decode_message,
    decode_record,
    encode_frame,
    encode_members,
    encode_message,
    encode_record,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
small = st.integers(min_value=0, max_value=2**40)
node = st.text(min_size=1, max_size=20)
blob = st.binary(max_size=300)
members = st.dictionaries(node, st.text(max_size=30), max_size=5)


@st.composite
def entries(draw: st.DrawFn) -> list[LogEntry]:
    first = draw(small)
    datas = draw(st.lists(blob, max_size=5))
    return [
        LogEntry.make(first + i, draw(small), draw(st.sampled_from([0, 1, 2])), d)
        for i, d in enumerate(datas)
    ]


messages = st.one_of(
    st.builds(AppendEntries, u64, node, u64, u64, u64, entries()),
    st.builds(AppendResp, u64, node, st.booleans(), u64, u64),
    st.builds(Heartbeat, u64, node, u64, u64),
    st.builds(HeartbeatResp, u64, node, u64),
    st.builds(VoteReq, u64, node, u64, u64, st.booleans(), st.booleans()),
    st.builds(TimeoutNow, u64, node),
    st.builds(VoteResp, u64, node, st.booleans(), st.booleans()),
    st.builds(SnapshotChunk, u64, node, u64, u64, u64, u64, members, blob),
    st.builds(SnapshotResp, u64, node, u64, u64),
    st.builds(Propose, u64, node, u64, st.sampled_from([NORMAL, CONFIG]), st.lists(blob)),
    st.builds(ProposeResp, u64, node, u64, u64, u64, st.integers(0, 3)),
    st.builds(ReadReq, u64, node, u64),
    st.builds(ReadResp, u64, node, u64, u64, st.integers(0, 3)),
)


@settings(deadline=None)  # a loaded CI box must not turn slowness into failures
@given(messages)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg
    frame = encode_frame(msg)
    length, crc = decode_frame_header(frame[:8])
    assert check_frame(frame[8 : 8 + length], crc) == msg


@settings(deadline=None)
@given(small, small, st.sampled_from([0, 1, 2]), blob)
def test_record_round_trip(index: int, term: int, kind: int, data: bytes) -> None:
    raw = encode_record(index, term, kind, data)
    entry, end = decode_record(raw + b"trailing", 0)
    assert (entry.index, entry.term, entry.kind, entry.data, entry.raw) == (
        index,
        term,
        kind,
        data,
        raw,
    )
    assert end == len(raw)


@settings(deadline=None)
@given(members)
def test_members_round_trip(m: dict[str, str]) -> None:
    assert decode_members(encode_members(m)) == (m, len(encode_members(m)))


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_garbage_payload_raises_only_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode_message(data)


@settings(deadline=None)
@given(messages, st.data())
def test_truncated_or_flipped_payload_is_rejected(msg: Message, data: st.DataObject) -> None:
    payload = encode_message(msg)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with contextlib.suppress(CodecError):
        decode_message(payload[:cut])
    frame = encode_frame(msg)
    pos = data.draw(st.integers(8, len(frame) - 1))
    flipped = frame[:pos] + bytes([frame[pos] ^ 0x01]) + frame[pos + 1 :]
    length, crc = decode_frame_header(flipped[:8])
    with pytest.raises(CodecError, match="CRC"):
        check_frame(flipped[8 : 8 + length], crc)


def test_oversized_frame_header_is_rejected_before_reading_the_body() -> None:
    with pytest.raises(CodecError, match="exceeds"):
        decode_frame_header(struct.pack("<II", MAX_FRAME + 1, 0))


def test_record_crc_catches_a_flipped_bit() -> None:
    raw = bytearray(encode_record(5, 2, NORMAL, b"hello"))
    raw[-1] ^= 0x10
    with pytest.raises(CodecError, match="CRC"):
        decode_record(bytes(raw), 0)
