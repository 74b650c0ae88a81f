"""The production :class:`~plasmacloud.iam.store.KVStore`: Chainfire's system keyspace.

IAM's state (users, policies, signing keys, refresh tokens...) lives in Chainfire's
``plasmacloud.system.v1.SystemKV`` service, a replicated table no etcd KV, Txn, Watch or
Lease call can reach, for any principal (etcd keeps its auth state the same way, in a
bucket of its own). Only the cluster's members may call it, so IAM calls it with the
node's certificate. Versions are the system keyspace's per-key versions: they change on
every write and ``0`` means absent, as :class:`KVStore` wants.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from plasmacloud.chainfire.proto import system_pb2 as pb
from plasmacloud.chainfire.proto import system_pb2_grpc
from plasmacloud.common.config import NodeConfig
from plasmacloud.iam.failover import Failover, endpoints_from_config
from plasmacloud.iam.store import KeyValue


def _kv(item: pb.KeyValue) -> KeyValue:
    return KeyValue(item.key.decode(), item.value, item.version)


class ChainfireSystemStore:
    """KVStore over Chainfire's SystemKV service (see module doc)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 5.0,
    ):
        self._sys = Failover(endpoints, credentials, system_pb2_grpc.SystemKVStub)
        self._timeout = timeout

    @classmethod
    def from_config(cls, config: NodeConfig) -> ChainfireSystemStore:
        """This node's Chainfire first, then the other peers, with the node's certificate."""
        return cls(*endpoints_from_config(config))

    async def get(self, key: str) -> KeyValue | None:
        req = pb.GetRequest(key=key.encode())
        resp = await self._sys.call(lambda s: s.Get(req, timeout=self._timeout), read=True)
        return _kv(resp.kv) if resp.HasField("kv") else None

    async def put(self, key: str, value: bytes) -> int:
        req = pb.PutRequest(key=key.encode(), value=value)
        resp = await self._sys.call(lambda s: s.Put(req, timeout=self._timeout))
        return int(resp.version)

    async def delete(self, key: str) -> bool:
        req = pb.DeleteRequest(key=key.encode())
        resp = await self._sys.call(lambda s: s.Delete(req, timeout=self._timeout))
        return bool(resp.deleted)

    async def range(
        self, prefix: str, start_after: str | None = None, limit: int = 0
    ) -> list[KeyValue]:
        req = pb.RangeRequest(prefix=prefix.encode(), limit=limit)
        if start_after is not None:
            req.start_after = start_after.encode()
        resp = await self._sys.call(lambda s: s.Range(req, timeout=self._timeout), read=True)
        return [_kv(i) for i in resp.kvs]

    async def compare_and_swap(self, key: str, expected_version: int, value: bytes | None) -> bool:
        req = pb.CompareAndSwapRequest(key=key.encode(), expected_version=expected_version)
        if value is not None:
            req.value = value
        resp = await self._sys.call(lambda s: s.CompareAndSwap(req, timeout=self._timeout))
        return bool(resp.succeeded)

    async def close(self) -> None:
        await self._sys.close()
