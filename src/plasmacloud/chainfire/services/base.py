"""What every Chainfire servicer shares: etcd error replies and per-method metrics."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.node import ChainfireNode

log = logging.getLogger(__name__)

S = TypeVar("S", bound="Servicer")
Handler = Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[Any]]


class Servicer:
    """Base of the servicers: they all work on one :class:`ChainfireNode`."""

    service = ""  # etcd's gRPC service name, for metrics labels

    def __init__(self, node: ChainfireNode) -> None:
        self.node = node


def unary(fn: Handler[S]) -> Handler[S]:
    """Turn EtcdError into etcd's status reply and count the call by method and code."""

    @functools.wraps(fn)
    async def wrapper(self: S, request: Any, context: grpc.aio.ServicerContext) -> Any:
        code = "OK"
        try:
            if self.node.authorizer is not None:
                await self.node.authorize(context, wrapper.__name__, request)
            return await fn(self, request, context)
        except errors.EtcdError as exc:
            code = exc.code.name
            await context.abort(exc.code, exc.message)
        except Exception:
            code = "UNKNOWN"
            log.exception("%s.%s failed", self.service, fn.__name__)
            raise
        finally:
            count(self.node, f"{self.service}/{wrapper.__name__}", code)

    return wrapper


async def guard_stream(servicer: Servicer, context: grpc.aio.ServicerContext, rpc: str) -> bool:
    """Authorize a streaming call that touches no key; False after refusing the call."""
    try:
        await servicer.node.authorize(context, rpc, None)
    except errors.EtcdError as exc:
        count(servicer.node, f"{servicer.service}/{rpc}", exc.code.name)
        await context.abort(exc.code, exc.message)
        return False
    return True


def count(node: ChainfireNode, method: str, code: str = "OK") -> None:
    """Record one call by method and status code."""
    node.metrics.request_counter(method, code).inc()


@contextlib.contextmanager
def as_client_errors() -> Iterator[None]:
    """etcd's lock and election services work through etcd's own client, whose errors
    reach the caller with their message but gRPC code UNKNOWN."""
    try:
        yield
    except errors.EtcdError as exc:
        raise errors.EtcdError(grpc.StatusCode.UNKNOWN, exc.message) from exc
