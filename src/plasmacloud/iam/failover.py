"""gRPC calls to Chainfire that move on to the next member when one is unreachable.

Both IAM stores (:mod:`~plasmacloud.iam.system_store`, :mod:`~plasmacloud.iam.etcd_store`)
hold one channel per endpoint; a call that finds its endpoint unavailable moves on to the
next (bounded to one pass over the list), so losing one Chainfire node does not stop IAM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import grpc

from plasmacloud.common.config import NodeConfig
from plasmacloud.common.tls import grpc_pem_material
from plasmacloud.iam.store import StoreUnavailable

S = TypeVar("S")
T = TypeVar("T")
_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def endpoints_from_config(
    config: NodeConfig,
) -> tuple[list[str], grpc.ChannelCredentials | None]:
    """This node's Chainfire first, then the other peers; the node's mTLS credentials."""
    peers = [config.me] + [p for p in config.peers if p.node_id != config.node_id]
    endpoints = [f"{p.ip}:{p.ports.chainfire_client}" for p in peers]
    creds = None
    if config.tls.enabled:
        ca, cert, key = grpc_pem_material(config.tls)
        creds = grpc.ssl_channel_credentials(ca, key, cert)
    return endpoints, creds


class Failover(Generic[S]):
    """One stub per endpoint; :meth:`call` tries them in turn, sticking to one that works."""

    def __init__(
        self,
        endpoints: Sequence[str],
        credentials: grpc.ChannelCredentials | None,
        stub: Callable[[grpc.aio.Channel], S],
    ) -> None:
        if not endpoints:
            raise ValueError("at least one Chainfire endpoint (host:port) is required")
        self._channels = [
            grpc.aio.secure_channel(e, credentials) if credentials else grpc.aio.insecure_channel(e)
            for e in endpoints
        ]
        self._stubs = [stub(ch) for ch in self._channels]
        self._current = 0

    async def call(self, op: Callable[[S], Awaitable[T]], read: bool = False) -> T:
        # A timed-out write may still have been applied, and re-sending a compare-and-swap
        # would then report a false "lost the race": writes move on only when the
        # endpoint was unreachable, reads also after a timeout.
        retry = _RETRY if read else {grpc.StatusCode.UNAVAILABLE}
        n = len(self._stubs)
        last: grpc.aio.AioRpcError | None = None
        for i in range(n):
            idx = (self._current + i) % n
            try:
                result = await op(self._stubs[idx])
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _RETRY and exc.code() not in retry:
                    raise StoreUnavailable(f"write outcome unknown: {exc.details()}") from exc
                if exc.code() not in retry:
                    raise
                last = exc
                continue
            self._current = idx
            return result
        raise StoreUnavailable(f"no Chainfire endpoint answered: {last}") from last

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()
