"""A :class:`~plasmacloud.iam.store.KVStore` over the public etcd v3 KV API.

For running IAM on a real etcd 3.4 (``plasma iam serve --store etcd``; tested in
tests/iam/test_iam_on_etcd.py). On Chainfire, IAM uses the system keyspace instead
(:mod:`plasmacloud.iam.system_store`): here its keys are ordinary keys, which any
client allowed to (an admin's ``del --prefix ""``) can read, watch or delete.
Uses the etcd-compatible stubs Chainfire generates (``plasmacloud.chainfire.proto``);
failover between endpoints as in :mod:`plasmacloud.iam.failover`.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.common.config import NodeConfig
from plasmacloud.common.keyrange import prefix_end
from plasmacloud.iam.failover import Failover, endpoints_from_config
from plasmacloud.iam.store import KeyValue


class EtcdStore:
    """KVStore over etcd v3 gRPC (a real etcd, or Chainfire's public keyspace)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 5.0,
    ):
        self._kv = Failover(endpoints, credentials, rpc_pb2_grpc.KVStub)
        self._call = self._kv.call
        self._timeout = timeout

    @classmethod
    def from_config(cls, config: NodeConfig) -> EtcdStore:
        """This node's Chainfire first, then the other peers (mTLS when TLS is on)."""
        return cls(*endpoints_from_config(config))

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
        await self._kv.close()
