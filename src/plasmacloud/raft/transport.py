"""Peer transport: one-way Raft messages between nodes.

The engine only needs :class:`Transport` (fire-and-forget ``send``; incoming messages go to
a callback), which lets the simulation swap in an in-memory network. :class:`TcpTransport`
is the real one: asyncio TCP with optional mTLS, one outbound connection per peer that
reconnects with backoff, and inbound connections that carry the peers' messages to us.
Anything malformed on an inbound connection (garbage, a bad CRC, an oversized or truncated
frame) closes that connection with a log line; the node carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Protocol

from plasmacloud.raft.codec import (
    FRAME_HEADER,
    CodecError,
    Message,
    check_frame,
    decode_frame_header,
    encode_frame,
)

log = logging.getLogger(__name__)

Handler = Callable[[Message], None]
MAX_BUFFERED = 32 * 1024 * 1024  # per peer: beyond this, drop messages (Raft retransmits)
READ_CHUNK = 256 * 1024


class Transport(Protocol):
    """What the node needs from the network."""

    async def start(self, handler: Handler) -> None: ...

    async def stop(self) -> None: ...

    def update_peers(self, peers: dict[str, str]) -> None:
        """Set node_id -> "host:port" for the peers we may send to."""
        ...

    def send(self, to: str, msg: Message) -> None:
        """Queue ``msg`` for ``to``; may silently drop it (the protocol copes)."""
        ...


def split_address(address: str) -> tuple[str, int]:
    """ "host:port" (IPv6 in brackets) -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class _Peer:
    """The outbound connection to one peer."""

    def __init__(self, owner: TcpTransport, node_id: str, address: str) -> None:
        self.owner = owner
        self.node_id = node_id
        self.address = address
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.pending: list[bytes] = []  # frames queued in this loop iteration

    def send(self, frame: bytes) -> None:
        w = self.writer
        if w is None or w.is_closing():
            self.wake.set()  # cut the reconnect backoff short: someone needs this peer
            return
        # one write per loop iteration: each write is a TLS record and a send() syscall,
        # and a leader often has an AppendEntries and a commit notification (a follower
        # an AppendResp and a HeartbeatResp) for the same peer in one iteration
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(frame)

    def flush(self) -> None:
        """Write the frames queued since the last flush as one buffer."""
        frames, self.pending = self.pending, []
        w = self.writer
        if not frames or w is None or w.is_closing():
            return
        if w.transport.get_write_buffer_size() > MAX_BUFFERED:
            return
        w.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = split_address(self.address)
        ip = self.owner.resolve(host) if self.owner.resolve else host
        ctx = self.owner.client_ssl
        return await asyncio.wait_for(
            asyncio.open_connection(ip, port, ssl=ctx, server_hostname=host if ctx else None),
            timeout=5.0,
        )

    async def run(self) -> None:
        """Keep a connection open; reconnect with exponential backoff while the node runs."""
        backoff = 0.02
        last_problem = ""
        failures = 0
        while True:
            try:
                reader, writer = await self._connect()
            except (TimeoutError, OSError, ValueError) as exc:
                # say it once at warning level (an unresolvable name or a refused TLS
                # handshake is a configuration problem someone must see), then quietly retry;
                # a refused connection is normal while peers start, so only if it persists
                problem = f"{type(exc).__name__}: {exc}"
                failures += 1
                new = problem != last_problem and not isinstance(exc, ConnectionRefusedError)
                level = logging.WARNING if new or failures == 10 else logging.DEBUG
                last_problem = problem
                log.log(level, "%s: cannot connect to peer %s at %s (%s); retrying",
                        self.owner.node_id, self.node_id, self.address, problem)  # fmt: skip
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.02
            last_problem, failures = "", 0
            self.writer = writer
            log.debug("%s: connected to %s at %s", self.owner.node_id, self.node_id, self.address)
            try:
                await reader.read(1)  # peers never answer on this connection: EOF = closed
            except OSError:
                pass
            finally:
                self.writer = None
                writer.close()
            log.info("%s: connection to %s lost; reconnecting", self.owner.node_id, self.node_id)


class TcpTransport:
    """Asyncio TCP (optionally mTLS) implementation of :class:`Transport`."""

    def __init__(
        self,
        node_id: str,
        host: str,
        port: int,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        resolve: Callable[[str], str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.resolve = resolve
        self._peers: dict[str, _Peer] = {}
        self._server: asyncio.Server | None = None
        self._handler: Handler | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.server_ssl, reuse_address=True
        )

    def update_peers(self, peers: dict[str, str]) -> None:
        for node_id, address in peers.items():
            if node_id == self.node_id:
                continue
            peer = self._peers.get(node_id)
            if peer is not None and peer.address == address:
                continue
            if peer is not None and peer.task is not None:
                peer.task.cancel()
            peer = _Peer(self, node_id, address)
            self._peers[node_id] = peer
            peer.task = asyncio.get_running_loop().create_task(peer.run())

    def send(self, to: str, msg: Message) -> None:
        peer = self._peers.get(to)
        if peer is not None:
            peer.send(encode_frame(msg))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        peer = writer.get_extra_info("peername")
        handler = self._handler
        assert handler is not None
        buf = bytearray()
        try:
            # read whatever has arrived and handle every complete frame in it: one await per
            # read rather than two per message
            while chunk := await reader.read(READ_CHUNK):
                buf += chunk
                pos = 0
                while len(buf) - pos >= FRAME_HEADER:
                    length, crc = decode_frame_header(buf[pos : pos + FRAME_HEADER])
                    end = pos + FRAME_HEADER + length
                    if end > len(buf):
                        break
                    handler(check_frame(bytes(buf[pos + FRAME_HEADER : end]), crc))
                    pos = end
                del buf[:pos]
            if buf:
                log.warning("%s: truncated frame from %s; closing it", self.node_id, peer)
        except CodecError as exc:
            log.warning("%s: bad frame from %s (%s); closing it", self.node_id, peer, exc)
        except OSError as exc:  # includes ssl.SSLError (e.g. no or untrusted client cert)
            log.info("%s: inbound connection from %s failed: %s", self.node_id, peer, exc)
        finally:
            self._conns.pop(task, None)
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for p in self._peers.values():
            if p.task is not None:
                p.task.cancel()
            if p.writer is not None:
                p.writer.close()
        # closing an inbound connection ends its reader loop normally (cancelling the
        # handler task instead makes asyncio's stream callback log a spurious traceback)
        inbound = list(self._conns.items())
        for _task, writer in inbound:
            writer.close()
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks.extend(t for t, _ in inbound)
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._peers.clear()
