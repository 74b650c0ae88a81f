"""The KV store contract, run against every implementation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from iam_fixtures import free_port

from plasmacloud.chainfire.server import ChainfireServer
from plasmacloud.common.config import NodeConfig, PeerConfig, ServicePorts, TLSConfig
from plasmacloud.common.keyrange import prefix_end
from plasmacloud.iam.etcd_store import EtcdStore
from plasmacloud.iam.store import KVStore, MemoryStore
from plasmacloud.iam.system_store import ChainfireSystemStore


@contextlib.asynccontextmanager
async def one_chainfire(root: Path) -> AsyncIterator[NodeConfig]:
    """A one-member Chainfire in this process (plaintext: SystemKV checks no identity)."""
    host = "127.0.0.97"
    ports = ServicePorts(
        chainfire_client=free_port(host),
        chainfire_peer=free_port(host),
        chainfire_metrics=free_port(host),
    )
    me = PeerConfig(node_id="node01", hostname="node01", ip=IPv4Address(host), ports=ports)
    config = NodeConfig(
        node_id="node01",
        hostname="node01",
        ip=IPv4Address(host),
        peers=[me],
        ports=ports,
        tls=TLSConfig(enabled=False),
        data_dir=root,
    )
    server = ChainfireServer(config)
    await server.start()
    try:
        yield config
    finally:
        await server.stop()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("etcd", marks=pytest.mark.slow),
        pytest.param("chainfire-system", marks=pytest.mark.slow),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KVStore]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "memory":
            s: KVStore = MemoryStore()
        elif request.param == "etcd":
            s = EtcdStore([request.getfixturevalue("etcd_endpoint")])
        else:
            s = ChainfireSystemStore.from_config(
                await stack.enter_async_context(one_chainfire(tmp_path))
            )
        try:
            yield s
        finally:
            for kv in await s.range("/"):
                await s.delete(kv.key)
            await s.close()


async def test_get_put_delete(store: KVStore) -> None:
    assert await store.get("/a") is None
    v1 = await store.put("/a", b"1")
    kv = await store.get("/a")
    assert kv is not None and kv.value == b"1" and kv.version == v1 > 0
    v2 = await store.put("/a", b"2")
    assert v2 != v1
    assert await store.delete("/a") is True
    assert await store.delete("/a") is False
    assert await store.get("/a") is None


async def test_range_by_prefix_with_pagination(store: KVStore) -> None:
    for k in ("/p/b", "/p/a", "/p/c", "/q/a", "/p"):
        await store.put(k, k.encode())
    assert [kv.key for kv in await store.range("/p/")] == ["/p/a", "/p/b", "/p/c"]
    assert [kv.key for kv in await store.range("/p/", limit=2)] == ["/p/a", "/p/b"]
    assert [kv.key for kv in await store.range("/p/", start_after="/p/b")] == ["/p/c"]
    assert await store.range("/p/", start_after="/p/c") == []
    assert await store.range("/none/") == []


async def test_compare_and_swap(store: KVStore) -> None:
    assert await store.compare_and_swap("/k", 0, b"first")
    assert not await store.compare_and_swap("/k", 0, b"again")  # exists now
    kv = await store.get("/k")
    assert kv is not None
    assert not await store.compare_and_swap("/k", kv.version + 100, b"x")
    assert await store.compare_and_swap("/k", kv.version, b"second")
    kv2 = await store.get("/k")
    assert kv2 is not None and kv2.value == b"second"
    assert not await store.compare_and_swap("/k", kv.version, None)  # stale version
    assert await store.compare_and_swap("/k", kv2.version, None)
    assert await store.get("/k") is None


def test_prefix_end() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"


async def test_keys_with_unusual_bytes_survive(store: KVStore) -> None:
    key = "/u/naïve ☃ key"
    await store.put(key, b"\x00\xff binary")
    kv = await store.get(key)
    assert kv is not None and kv.value == b"\x00\xff binary"
    assert [k.key for k in await store.range("/u/")] == [key]
