"""The member's side of the frontend link: a streamed response is sent no further ahead
of its client than the window the worker grants (the back-pressure a gRPC stream gives
in-process), and a cancelled call's handler stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from plasmacloud.chainfire.frontend import protocol as p
from plasmacloud.chainfire.frontend.dispatch import MemberLink, MethodRegistry

METHOD = "/test.Stream/Forever"


class Wire:
    """A transport that keeps what the member writes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def frames(self) -> list[tuple[int, int, bytes]]:
        return list(p.split(bytearray(self.data)))  # split consumes what it reads


async def endless(_request: Any, _context: Any) -> AsyncIterator[bytes]:
    """A watch whose events never stop."""
    i = 0
    while True:
        yield b"event %d" % i
        i += 1


def member_link() -> tuple[MemberLink, Wire]:
    registry = MethodRegistry()
    handler = grpc.unary_stream_rpc_method_handler(
        endless, request_deserializer=bytes, response_serializer=bytes
    )
    registry.add_registered_method_handlers("test.Stream", {"Forever": handler})
    link = MemberLink(registry, asyncio.Queue())
    wire = Wire()
    link.connection_made(wire)  # type: ignore[arg-type]
    return link, wire


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def replies(frames: list[tuple[int, int, bytes]]) -> list[bytes]:
    return [payload for kind, call_id, payload in frames if kind == p.REPLY and call_id == 7]


async def test_a_streamed_response_waits_for_the_window_the_worker_grants() -> None:
    link, wire = member_link()
    start = p.Start(METHOD, "ipv4:127.0.0.1:1", "", (), b"")
    link.data_received(p.frame(p.START, 7, start.encode()))
    await settle()
    assert len(replies(wire.frames())) == p.STREAM_WINDOW  # then it waits, however long
    link.data_received(p.frame(p.MORE, 7, p.encode_count(10)))
    await settle()
    got = replies(wire.frames())
    assert len(got) == p.STREAM_WINDOW + 10
    assert got == [b"event %d" % i for i in range(len(got))]  # in order, none lost
    link.data_received(p.frame(p.CANCEL, 7))
    await settle()
    assert 7 not in link.calls
    link.connection_lost(None)


async def test_a_malformed_grant_closes_the_link() -> None:
    link, wire = member_link()
    start = p.Start(METHOD, "", "", (), b"")
    link.data_received(p.frame(p.START, 7, start.encode()) + p.frame(p.MORE, 7, b"\x01"))
    assert wire.closed
    link.connection_lost(None)
    await settle()
