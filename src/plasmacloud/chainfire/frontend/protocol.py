"""The frames a frontend worker and its member exchange over their Unix socket.

Every frame is ``length (u32) | kind (u8) | call id (u32) | payload``, ``length``
counting everything after itself. One call is one id, chosen by the worker:

worker -> member: ``START`` (method, caller, metadata; for a unary request the request
bytes follow, the request side is then complete), ``MSG`` (one streamed request),
``CLOSE`` (the client finished sending), ``CANCEL`` (the client went away), ``MORE``
(a streamed response's client took this many replies: the member may send as many more).
member -> worker: ``HELLO`` (id 0, once: the method table), ``REPLY`` (one response),
``END`` (status code, details: the call is over).
worker -> member, id 0: ``READY`` (its gRPC server is listening).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass

HELLO, READY, START, MSG, CLOSE, CANCEL, REPLY, END, MORE = range(9)

# Replies of a streamed response the member may send ahead of its client: the window a
# gRPC stream's flow control gives in-process, so a watcher that does not read makes its
# member's watch queue grow (and its watchers park, as etcd's slow watchers do) instead
# of the worker's memory. The worker grants more as its client takes them, half a window
# at a time.
STREAM_WINDOW = 64

_HEAD = struct.Struct("!IBI")  # length, kind, call id
_START = struct.Struct("!HHHI")  # method, peer, common name, metadata lengths
_END = struct.Struct("!B")  # status code (grpc.StatusCode's number)
_COUNT = struct.Struct("!I")  # MORE: replies granted
HEAD_SIZE = _HEAD.size
FIELD_SEP = b"\x00"

# method -> (request streamed, response streamed)
MethodTable = dict[str, tuple[bool, bool]]


class ProtocolError(ValueError):
    """A frame that cannot be what the other side sent: the link is closed."""


def frame(kind: int, call_id: int, payload: bytes = b"") -> bytes:
    """One frame, ready to write."""
    return _HEAD.pack(len(payload) + 5, kind, call_id) + payload


def split(buffer: bytearray) -> Iterator[tuple[int, int, bytes]]:
    """Take every complete frame off the front of ``buffer`` as (kind, id, payload)."""
    offset, end = 0, len(buffer)
    while end - offset >= HEAD_SIZE:
        length, kind, call_id = _HEAD.unpack_from(buffer, offset)
        if length < 5:
            raise ProtocolError(f"frame length {length} is shorter than its header")
        stop = offset + 4 + length
        if stop > end:
            break
        yield kind, call_id, bytes(buffer[offset + HEAD_SIZE : stop])
        offset = stop
    del buffer[:offset]


@dataclass(frozen=True)
class Start:
    """A new call: which method, who calls (peer address, verified certificate CN) and
    with which metadata; ``request`` holds a unary call's request bytes."""

    method: str
    peer: str
    common_name: str
    metadata: tuple[tuple[str, str], ...]
    request: bytes

    def encode(self) -> bytes:
        meta = FIELD_SEP.join(
            part.encode() for key, value in self.metadata for part in (key, value)
        )
        method, peer, name = self.method.encode(), self.peer.encode(), self.common_name.encode()
        head = _START.pack(len(method), len(peer), len(name), len(meta))
        return b"".join((head, method, peer, name, meta, self.request))

    @classmethod
    def decode(cls, payload: bytes) -> Start:
        try:
            sizes = _START.unpack_from(payload)
        except struct.error as exc:
            raise ProtocolError(f"START frame too short: {exc}") from None
        fields, offset = [], _START.size
        for size in sizes:
            fields.append(payload[offset : offset + size])
            offset += size
        if offset > len(payload):
            raise ProtocolError("START frame shorter than its field lengths")
        method, peer, name, meta = fields
        parts = meta.decode().split("\x00") if meta else []
        if len(parts) % 2:
            raise ProtocolError("START metadata has a key without a value")
        pairs = tuple(zip(parts[::2], parts[1::2], strict=True))
        return cls(method.decode(), peer.decode(), name.decode(), pairs, payload[offset:])


def encode_end(code: int, details: str) -> bytes:
    return _END.pack(code) + details.encode()


def decode_end(payload: bytes) -> tuple[int, str]:
    if not payload:
        raise ProtocolError("END frame without a status code")
    return payload[0], payload[1:].decode(errors="replace")


def encode_table(table: MethodTable) -> bytes:
    return json.dumps(table).encode()


def decode_table(payload: bytes) -> MethodTable:
    try:
        raw = json.loads(payload)
        return {str(name): (bool(kinds[0]), bool(kinds[1])) for name, kinds in raw.items()}
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ProtocolError(f"bad method table: {exc}") from None


def encode_count(n: int) -> bytes:
    return _COUNT.pack(n)


def decode_count(payload: bytes) -> int:
    try:
        (n,) = _COUNT.unpack(payload)
    except struct.error as exc:
        raise ProtocolError(f"MORE frame: {exc}") from None
    return int(n)
