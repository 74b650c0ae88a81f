"""The system keyspace on three real `plasma chainfire serve` processes with mTLS: members
only, writes through a follower, reads after the ReadIndex barrier, and a follower that
missed compacted log entries gets the system table through a Raft snapshot."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest

from plasmacloud.chainfire.client import ChainfireClient
from plasmacloud.chainfire.proto import system_pb2, system_pb2_grpc
from plasmacloud.common.config import TLSConfig
from plasmacloud.common.tls import grpc_pem_material
from plasmacloud.iam.failover import endpoints_from_config
from plasmacloud.iam.system_store import ChainfireSystemStore

from .cluster import Cluster
from .test_cluster import leader_of

pytestmark = pytest.mark.slow


def store_on(cluster: Cluster, node_id: str, *, via: str) -> ChainfireSystemStore:
    """IAM's store as ``via``'s IAM would open it, but talking to ``node_id`` only."""
    _endpoints, creds = endpoints_from_config(cluster.configs[via])
    return ChainfireSystemStore([cluster.endpoint(node_id)], creds)


def credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    ca, cert, key = grpc_pem_material(tls)
    return grpc.ssl_channel_credentials(ca, key, cert)


async def test_members_only_and_follower_writes(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start_all()
        await asyncio.to_thread(cluster.wait_healthy)
        async with ChainfireClient(cluster.endpoints(), cluster.operator_tls) as client:
            leader = await leader_of(client, cluster.endpoints())
            follower = next(n for n in cluster.founders if n != leader)
            store = store_on(cluster, follower, via=follower)
            try:
                v1 = await store.put("/plasmacloud/iam/users/a", b"A")
                assert await store.compare_and_swap("/plasmacloud/iam/users/b", 0, b"B")
                assert not await store.compare_and_swap("/plasmacloud/iam/users/a", 0, b"x")
                got = await store.get("/plasmacloud/iam/users/a")
                assert got is not None and (got.value, got.version) == (b"A", v1)
                listed = await store.range("/plasmacloud/iam/")
                assert [kv.key for kv in listed] == [
                    "/plasmacloud/iam/users/a",
                    "/plasmacloud/iam/users/b",
                ]
            finally:
                await store.close()
            # written through a follower, read on the leader: the same replicated state
            on_leader = store_on(cluster, leader, via=follower)
            try:
                assert (await on_leader.get("/plasmacloud/iam/users/b")) is not None
            finally:
                await on_leader.close()
            # the operator (no member certificate) sees none of it, through either API
            assert await client.range_prefix("/") == []
            async with grpc.aio.secure_channel(
                cluster.endpoint(leader), credentials(cluster.operator_tls)
            ) as channel:
                stub = system_pb2_grpc.SystemKVStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Get(system_pb2.GetRequest(key=b"/plasmacloud/iam/users/a"))
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        cluster.stop_all()


async def test_lagging_member_gets_the_system_table_by_snapshot(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, serve_args=("--snapshot-threshold", "50"))
    try:
        cluster.start_all()
        await asyncio.to_thread(cluster.wait_healthy)
        async with ChainfireClient(cluster.endpoints(), cluster.operator_tls) as client:
            leader = await leader_of(client, cluster.endpoints())
        lagging = next(n for n in cluster.founders if n != leader)
        assert cluster.kill(lagging, signal.SIGTERM) == 0
        store = store_on(cluster, leader, via=leader)
        try:
            for i in range(200):  # several snapshots: the log it missed is compacted away
                await store.put(f"/s/{i:03d}", str(i).encode())
        finally:
            await store.close()
        cluster.start(lagging)
        await asyncio.to_thread(cluster.wait_healthy, [lagging])
        one = store_on(cluster, lagging, via=lagging)
        try:
            kvs = await one.range("/s/")
        finally:
            await one.close()
        assert [kv.value.decode() for kv in kvs] == [str(i) for i in range(200)]
        assert "installing snapshot" in (tmp_path / f"{lagging}.log").read_text()
    finally:
        cluster.stop_all()
