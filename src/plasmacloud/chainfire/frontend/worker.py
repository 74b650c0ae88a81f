"""A frontend worker: the member's client port served in a process of its own.

Started by the member (:mod:`.supervisor`) as ``python -m
plasmacloud.chainfire.frontend.worker --config PATH --socket PATH``. It connects to the
member's socket, learns the method table, listens on the client port beside the other
workers (``SO_REUSEPORT``) and relays each call's bytes without decoding them. It exits
when the member closes the socket (the member stopped or died) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

from plasmacloud.chainfire.frontend import protocol as p
from plasmacloud.chainfire.frontend.link import FramedLink

log = logging.getLogger(__name__)

STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class _Pending:
    """A call waiting for the member's answers: the replies as they come when the
    response is streamed, otherwise the last one; ``ended`` resolves at END."""

    __slots__ = ("ended", "replies", "reply", "status")

    def __init__(self, streamed: bool) -> None:
        # a unary answer needs no queue: one future per call is the cheapest wake-up
        self.replies: asyncio.Queue[bytes | None] | None = asyncio.Queue() if streamed else None
        self.reply: bytes | None = None
        self.status: tuple[int, str] = (grpc.StatusCode.UNKNOWN.value[0], "no answer")
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_reply(self, payload: bytes) -> None:
        if self.replies is not None:
            self.replies.put_nowait(payload)
        else:
            self.reply = payload

    def on_end(self, status: tuple[int, str]) -> None:
        self.status = status
        if self.replies is not None:
            self.replies.put_nowait(None)
        if not self.ended.done():
            self.ended.set_result(None)


class WorkerLink(FramedLink):
    """The worker's end of the link: numbers calls, writes their frames, routes answers."""

    def __init__(self) -> None:
        super().__init__()
        self.table: asyncio.Future[p.MethodTable] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self.pending: dict[int, _Pending] = {}
        self._next_id = 1

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for call in self.pending.values():
            call.on_end((grpc.StatusCode.UNAVAILABLE.value[0], "chainfire member went away"))
        self.pending.clear()
        if not self.table.done():
            self.table.set_exception(ConnectionError("member closed the link before HELLO"))
        self.closed.set()

    def on_frame(self, kind: int, call_id: int, payload: bytes) -> None:
        if kind == p.HELLO:
            self.table.set_result(p.decode_table(payload))
            return
        call = self.pending.get(call_id)
        if call is None:
            return  # cancelled here already
        if kind == p.REPLY:
            call.on_reply(payload)
        elif kind == p.END:
            del self.pending[call_id]
            call.on_end(p.decode_end(payload))
        else:
            raise p.ProtocolError(f"unknown frame kind {kind} from the member")

    def open(
        self, method: str, streamed: bool, context: grpc.aio.ServicerContext, request: bytes
    ) -> int:
        """Start a call at the member (``streamed``: its response is); the call's id."""
        if self.transport is None:
            raise ConnectionError("no member")
        call_id = self._next_id
        self._next_id = call_id + 1 if call_id < 0xFFFFFFFF else 1
        self.pending[call_id] = _Pending(streamed)
        names = context.auth_context().get("x509_common_name") or [b""]
        common_name = names[0].decode(errors="replace")
        metadata = tuple(
            (m[0], m[1]) for m in context.invocation_metadata() or () if isinstance(m[1], str)
        )
        start = p.Start(method, context.peer() or "", common_name, metadata, request)
        self.send(p.START, call_id, start.encode())
        return call_id

    async def answers(self, call_id: int) -> AsyncIterator[bytes]:
        """The member's responses to a streamed call, until END. Each is taken once the
        client's stream took the one before (grpc.aio writes a yielded message before
        asking for the next), and the member is granted more as they are taken."""
        call = self.pending[call_id]
        assert call.replies is not None
        taken = 0
        try:
            while (reply := await call.replies.get()) is not None:
                yield reply
                taken += 1
                if taken >= p.STREAM_WINDOW // 2 and call_id in self.pending:
                    self.send(p.MORE, call_id, p.encode_count(taken))
                    taken = 0
        finally:
            self.forget(call_id)

    async def answer(self, call_id: int) -> bytes | None:
        """The member's response to a call whose response is not streamed."""
        call = self.pending[call_id]
        try:
            await call.ended
        finally:
            self.forget(call_id)
        return call.reply

    def forget(self, call_id: int) -> None:
        """Done with a call here: if the member has not ended it, the client went away."""
        if self.pending.pop(call_id, None) is not None:
            self.send(p.CANCEL, call_id)


async def check_status(call: _Pending, context: grpc.aio.ServicerContext) -> None:
    """End the client's call with the member's status if that is an error."""
    code, details = call.status
    if code != grpc.StatusCode.OK.value[0]:
        await context.abort(STATUS_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), details)


Behaviour = Callable[[Any, grpc.aio.ServicerContext], Any]


def relay_handler(link: WorkerLink, method: str, kinds: tuple[bool, bool]) -> grpc.RpcMethodHandler:
    """A gRPC method handler that relays ``method`` over ``link`` (bytes in, bytes out)."""
    request_streaming, response_streaming = kinds

    def begin(
        request: Any, context: grpc.aio.ServicerContext
    ) -> tuple[int, _Pending, asyncio.Task[None] | None]:
        if not request_streaming:
            call_id = link.open(method, response_streaming, context, request)
            return call_id, link.pending[call_id], None
        call_id = link.open(method, response_streaming, context, b"")

        async def pump() -> None:
            async for message in request:
                link.send(p.MSG, call_id, message)
            link.send(p.CLOSE, call_id)

        return call_id, link.pending[call_id], asyncio.get_running_loop().create_task(pump())

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        call_id, call, pump = begin(request, context)
        try:
            async for reply in link.answers(call_id):
                yield reply
        finally:
            if pump is not None:
                pump.cancel()
        await check_status(call, context)

    async def single(request: Any, context: grpc.aio.ServicerContext) -> bytes | None:
        call_id, call, pump = begin(request, context)
        try:
            reply = await link.answer(call_id)
        finally:
            if pump is not None:
                pump.cancel()
        await check_status(call, context)
        return reply

    behaviour: Behaviour = stream if response_streaming else single
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[kinds]
    return factory(behaviour)


class RelayHandlers(grpc.GenericRpcHandler):
    """Every method of the member's table, relayed."""

    def __init__(self, link: WorkerLink, table: p.MethodTable) -> None:
        self._handlers = {name: relay_handler(link, name, k) for name, k in table.items()}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


async def run_worker(config_path: Path, socket_path: Path, stop: asyncio.Event) -> None:
    """Serve the client port for the member behind ``socket_path`` until it goes away."""
    # imported here: the member's modules, for the port and TLS it serves with
    from plasmacloud.chainfire.listen import grpc_server
    from plasmacloud.common.config import NodeConfig
    from plasmacloud.common.tls import watch_certificates

    config = NodeConfig.load(config_path)
    loop = asyncio.get_running_loop()
    _, link = await loop.create_unix_connection(WorkerLink, str(socket_path))
    table = await link.table
    server, address = grpc_server(config)
    server.add_generic_rpc_handlers((RelayHandlers(link, table),))
    reloads = loop.create_task(watch_certificates(), name="tls-reload")
    await server.start()
    link.send(p.READY, 0)
    log.info("chainfire frontend serving %s for %s", address, config.node_id)
    waits = [asyncio.ensure_future(w) for w in (link.closed.wait(), stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*waits, reloads):
            task.cancel()
        await server.stop(grace=0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description="A Chainfire frontend worker (started by its member).")
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--socket", type=Path, required=True)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from plasmacloud.chainfire.listen import new_event_loop
    from plasmacloud.common.gc_tuning import tune_gc

    async def start() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await run_worker(args.config, args.socket, stop)

    tune_gc()
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(start())


if __name__ == "__main__":
    main()
