"""The member's side of the frontend link: calls relayed by workers run on the servicers.

The servicers are registered exactly as on a gRPC server (:class:`MethodRegistry` is
what ``add_*Servicer_to_server`` writes into), so a relayed call meets the same
handler, authorization and errors as a direct one; :class:`RelayedContext` answers the
few questions the handlers ask of their gRPC context.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from plasmacloud.chainfire.frontend import protocol as p
from plasmacloud.chainfire.frontend.link import FramedLink

log = logging.getLogger(__name__)


class MethodRegistry:
    """Collects method handlers the way a ``grpc.aio.Server`` registers them."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Ignored: the same handlers arrive by name through the next call."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler

    def table(self) -> p.MethodTable:
        return {
            name: (h.request_streaming, h.response_streaming) for name, h in self.handlers.items()
        }


class Aborted(Exception):
    """A handler's ``context.abort``: ends the call with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class RelayedContext:
    """What a servicer reads of its gRPC context, from the worker's START frame."""

    def __init__(self, start: p.Start) -> None:
        self._start = start

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._start.metadata

    def peer(self) -> str:
        return self._start.peer

    def auth_context(self) -> dict[str, list[bytes]]:
        name = self._start.common_name
        return {"x509_common_name": [name.encode()]} if name else {}

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)


class _Call:
    """One relayed call in the member: its handler task, its streamed requests, and how
    many replies it may still send before its client takes some (a streamed response)."""

    def __init__(self, link: MemberLink, call_id: int, handler: Any, start: p.Start) -> None:
        self.link, self.call_id, self.handler = link, call_id, handler
        self.context = RelayedContext(start)
        self.requests: asyncio.Queue[bytes | None] | None = None
        if handler.request_streaming:
            self.requests = asyncio.Queue()
        self.window = p.STREAM_WINDOW
        self.granted = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.run(start.request))

    def grant(self, n: int) -> None:
        self.window += n
        self.granted.set()

    async def _reply(self, raw: bytes) -> None:
        """Send one streamed reply, first waiting (as a gRPC stream's write would) while
        the client has the whole window unread."""
        while self.window <= 0:
            self.granted.clear()
            await self.granted.wait()
        self.window -= 1
        self.link.send(p.REPLY, self.call_id, raw)

    async def _request_stream(self) -> AsyncIterator[Any]:
        assert self.requests is not None
        while (raw := await self.requests.get()) is not None:
            yield self.handler.request_deserializer(raw)

    async def run(self, request: bytes) -> None:
        h = self.handler
        behaviour = h.stream_stream or h.unary_stream or h.stream_unary or h.unary_unary
        try:
            arg = self._request_stream() if self.requests else h.request_deserializer(request)
            result = behaviour(arg, self.context)
            if inspect.isasyncgen(result):
                async for response in result:
                    await self._reply(h.response_serializer(response))
            else:
                response = await result
                if response is not None:
                    self.link.send(p.REPLY, self.call_id, h.response_serializer(response))
            self.link.end(self.call_id, grpc.StatusCode.OK, "")
        except Aborted as exc:
            self.link.end(self.call_id, exc.code, exc.details)
        except asyncio.CancelledError:
            pass  # the client went away (CANCEL) or the link closed: nobody to answer
        except Exception as exc:  # grpc.aio answers an unexpected error the same way
            log.exception("relayed %s failed", h)
            self.link.end(self.call_id, grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")
        finally:
            self.link.calls.pop(self.call_id, None)


class MemberLink(FramedLink):
    """One worker's connection to the member."""

    def __init__(self, registry: MethodRegistry, on_ready: asyncio.Queue[MemberLink]) -> None:
        super().__init__()
        self.registry, self.on_ready = registry, on_ready
        self.calls: dict[int, _Call] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.send(p.HELLO, 0, p.encode_table(self.registry.table()))

    def connection_lost(self, exc: Exception | None) -> None:
        for call in list(self.calls.values()):
            call.task.cancel()
        self.calls.clear()
        super().connection_lost(exc)

    def on_frame(self, kind: int, call_id: int, payload: bytes) -> None:
        if kind == p.START:
            start = p.Start.decode(payload)
            handler = self.registry.handlers.get(start.method)
            if handler is None:
                self.end(call_id, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            else:
                self.calls[call_id] = _Call(self, call_id, handler, start)
            return
        if kind == p.READY:
            self.on_ready.put_nowait(self)
            return
        call = self.calls.get(call_id)
        if call is None:
            return  # already over (answered, or its handler failed): nothing to feed
        if kind == p.CANCEL:
            call.task.cancel()
        elif kind == p.MORE:
            call.grant(p.decode_count(payload))
        elif call.requests is None:
            raise p.ProtocolError(f"frame kind {kind} for call {call_id}, which takes no stream")
        elif kind == p.MSG:
            call.requests.put_nowait(payload)
        elif kind == p.CLOSE:
            call.requests.put_nowait(None)
        else:
            raise p.ProtocolError(f"unknown frame kind {kind}")

    def end(self, call_id: int, code: grpc.StatusCode, details: str) -> None:
        self.send(p.END, call_id, p.encode_end(code.value[0], details))
