"""What both ends of the frontend link share: frames in from any cut of the byte
stream, frames out batched into one write per loop iteration."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from plasmacloud.chainfire.frontend import protocol as p

log = logging.getLogger(__name__)


class FramedLink(asyncio.Protocol):
    """A Unix-socket protocol speaking :mod:`.protocol`'s frames; subclasses handle
    each complete frame in :meth:`on_frame` (raising ``ProtocolError`` closes the link)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            for kind, call_id, payload in p.split(self._buffer):
                self.on_frame(kind, call_id, payload)
        except p.ProtocolError as exc:
            log.error("frontend link closed: %s", exc)
            if self.transport is not None:
                self.transport.close()

    def on_frame(self, kind: int, call_id: int, payload: bytes) -> None:
        raise NotImplementedError

    def send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        # Frames queued in one loop iteration leave in one write (one syscall).
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(p.frame(kind, call_id, payload))

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))
