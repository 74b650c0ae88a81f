"""The production :class:`~plasmacloud.iam.store.KVStore`: Chainfire over the etcd v3 API.

Uses the etcd-compatible stubs Chainfire generates (``plasmacloud.chainfire.proto``), so
it works against Chainfire and against a real etcd 3.4 alike. One gRPC channel per
endpoint; a call that finds its endpoint unavailable moves on to the next (bounded to
one pass over the list), so losing one Chainfire node does not stop IAM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.common.config import NodeConfig
from plasmacloud.common.tls import grpc_pem_material
from plasmacloud.iam.keyrange import prefix_end
from plasmacloud.iam.store import KeyValue, StoreUnavailable

T = TypeVar("T")
_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class EtcdStore:
    """KVStore over etcd v3 gRPC (Chainfire or etcd)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 5.0,
    ):
        if not endpoints:
            raise ValueError("at least one Chainfire endpoint (host:port) is required")
        self._channels = [
            grpc.aio.secure_channel(e, credentials) if credentials else grpc.aio.insecure_channel(e)
            for e in endpoints
        ]
        self._kv = [rpc_pb2_grpc.KVStub(ch) for ch in self._channels]
        self._current = 0
        self._timeout = timeout

    @classmethod
    def from_config(cls, config: NodeConfig) -> EtcdStore:
        """This node's Chainfire first, then the other peers (mTLS when TLS is on)."""
        peers = [config.me] + [p for p in config.peers if p.node_id != config.node_id]
        endpoints = [f"{p.ip}:{p.ports.chainfire_client}" for p in peers]
        creds = None
        if config.tls.enabled:
            ca, cert, key = grpc_pem_material(config.tls)
            creds = grpc.ssl_channel_credentials(ca, key, cert)
        return cls(endpoints, creds)

    async def _call(self, op: Callable[[Any], Awaitable[T]], read: bool = False) -> T:
        # A timed-out write may still have been applied, and re-sending a compare-and-swap
        # would then report a false "lost the race": writes move on only when the
        # endpoint was unreachable, reads also after a timeout.
        retry = _RETRY if read else {grpc.StatusCode.UNAVAILABLE}
        n = len(self._kv)
        last: grpc.aio.AioRpcError | None = None
        for i in range(n):
            idx = (self._current + i) % n
            try:
                result = await op(self._kv[idx])
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

    async def get(self, key: str) -> KeyValue | None:
        resp = await self._call(
            lambda kv: kv.Range(rpc_pb2.RangeRequest(key=key.encode()), timeout=self._timeout),
            read=True,
        )
        if not resp.kvs:
            return None
        item = resp.kvs[0]
        return KeyValue(item.key.decode(), item.value, item.mod_revision)

    async def put(self, key: str, value: bytes) -> int:
        resp = await self._call(
            lambda kv: kv.Put(
                rpc_pb2.PutRequest(key=key.encode(), value=value), timeout=self._timeout
            )
        )
        return int(resp.header.revision)

    async def delete(self, key: str) -> bool:
        resp = await self._call(
            lambda kv: kv.DeleteRange(
                rpc_pb2.DeleteRangeRequest(key=key.encode()), timeout=self._timeout
            )
        )
        return bool(resp.deleted)

    async def range(
        self, prefix: str, start_after: str | None = None, limit: int = 0
    ) -> list[KeyValue]:
        start = prefix.encode()
        if start_after is not None and start_after >= prefix:
            start = start_after.encode() + b"\x00"  # the smallest key after start_after
        req = rpc_pb2.RangeRequest(
            key=start,
            range_end=prefix_end(prefix.encode()),
            limit=limit,
            sort_order=rpc_pb2.RangeRequest.ASCEND,
            sort_target=rpc_pb2.RangeRequest.KEY,
        )
        resp = await self._call(lambda kv: kv.Range(req, timeout=self._timeout), read=True)
        return [KeyValue(i.key.decode(), i.value, i.mod_revision) for i in resp.kvs]

    async def compare_and_swap(self, key: str, expected_version: int, value: bytes | None) -> bool:
        k = key.encode()
        # A missing key has mod_revision 0 in etcd's comparisons, matching our "0 = absent".
        cmp = rpc_pb2.Compare(
            key=k,
            target=rpc_pb2.Compare.MOD,
            result=rpc_pb2.Compare.EQUAL,
            mod_revision=expected_version,
        )
        if value is None:
            op = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))
        else:
            op = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=value))
        req = rpc_pb2.TxnRequest(compare=[cmp], success=[op])
        resp = await self._call(lambda kv: kv.Txn(req, timeout=self._timeout))
        return bool(resp.succeeded)

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()
