"""The frontend link's frames: whatever one side encodes the other decodes unchanged,
however the bytes are cut into reads, and a malformed frame is an error, not a guess."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plasmacloud.chainfire.frontend import protocol as p

text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
starts = st.builds(
    p.Start,
    method=text,
    peer=text,
    common_name=text,
    metadata=st.lists(st.tuples(text, text), max_size=4).map(tuple),
    request=st.binary(),
)
frames = st.lists(
    st.tuples(st.integers(0, 8), st.integers(0, 2**32 - 1), st.binary(max_size=300)), max_size=8
)


@given(starts)
def test_start_round_trips(start: p.Start) -> None:
    assert p.Start.decode(start.encode()) == start


@given(frames, st.lists(st.integers(1, 64), min_size=1))
def test_frames_come_out_whole_however_the_reads_cut_them(
    sent: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(p.frame(kind, call_id, payload) for kind, call_id, payload in sent)
    buffer, got, offset, i = bytearray(), [], 0, 0
    while offset < len(wire):
        step = cuts[i % len(cuts)]
        buffer += wire[offset : offset + step]
        offset, i = offset + step, i + 1
        got.extend(p.split(buffer))
    assert got == sent
    assert buffer == bytearray()


def test_end_and_table_round_trip() -> None:
    assert p.decode_end(p.encode_end(7, "etcdserver: permission denied")) == (
        7,
        "etcdserver: permission denied",
    )
    table = {"/etcdserverpb.KV/Put": (False, False), "/etcdserverpb.Watch/Watch": (True, True)}
    assert p.decode_table(p.encode_table(table)) == table


def test_a_frame_shorter_than_its_header_is_refused() -> None:
    with pytest.raises(p.ProtocolError, match="shorter than its header"):
        list(p.split(bytearray(p._HEAD.pack(3, 0, 0))))


def test_malformed_payloads_are_refused() -> None:
    with pytest.raises(p.ProtocolError, match="too short"):
        p.Start.decode(b"\x00")
    with pytest.raises(p.ProtocolError, match="shorter than its field lengths"):
        p.Start.decode(p._START.pack(10, 0, 0, 0) + b"abc")
    with pytest.raises(p.ProtocolError, match="key without a value"):
        p.Start.decode(p._START.pack(0, 0, 0, 1) + b"k")
    with pytest.raises(p.ProtocolError, match="without a status code"):
        p.decode_end(b"")
    with pytest.raises(p.ProtocolError, match="bad method table"):
        p.decode_table(b"[1]")
