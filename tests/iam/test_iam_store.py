"""The KV store contract, run against every implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from plasmacloud.iam.etcd_store import EtcdStore
from plasmacloud.iam.keyrange import prefix_end
from plasmacloud.iam.store import KVStore, MemoryStore


@pytest.fixture(params=["memory", pytest.param("etcd", marks=pytest.mark.slow)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[KVStore]:
    if request.param == "memory":
        s: KVStore = MemoryStore()
    else:
        s = EtcdStore([request.getfixturevalue("etcd_endpoint")])
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
