"""plasmacloud.chainfire.client against one in-process member."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.client import (
    ChainfireClient,
    delete_op,
    get_op,
    prefix_end,
    put_op,
    value_is,
)
from plasmacloud.chainfire.node import member_id
from plasmacloud.chainfire.proto import kv_pb2
from plasmacloud.chainfire.proto import rpc_pb2 as pb

from .conftest import Served


def test_prefix_end() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def dead_endpoint() -> str:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def test_client_basics_with_failover(served: Served) -> None:
    async with ChainfireClient([dead_endpoint(), served.address], timeout=3) as c:
        r = await c.put("iam/users/alice", "1")
        assert r.header.revision == 2
        await c.put("iam/users/bob", b"2")
        await c.put("iam/usersX", b"no")
        assert (await c.get("iam/users/alice")).value == b"1"  # type: ignore[union-attr]
        assert await c.get("missing") is None
        assert [kv.key for kv in await c.range_prefix("iam/users/")] == [
            b"iam/users/alice",
            b"iam/users/bob",
        ]
        assert await c.put_if_absent("iam/users/carol", "3")
        assert not await c.put_if_absent("iam/users/carol", "again")
        carol = await c.get("iam/users/carol")
        assert carol is not None
        assert not await c.compare_and_swap("iam/users/carol", carol.mod_revision - 1, "x")
        assert await c.compare_and_swap("iam/users/carol", carol.mod_revision, "4")
        t = await c.txn(
            [value_is("iam/users/bob", "2")],
            [delete_op("iam/users/bob"), get_op("iam/users/alice")],
            [put_op("never", "x")],
        )
        assert t.succeeded and t.responses[1].response_range.kvs[0].value == b"1"
        assert await c.delete("iam/users/", prefix=True) == 2
        members = await c.member_list()
        assert [m.name for m in members] == ["node01"]
        host = served.address.split(":")[0]
        added = await c.member_add(f"http://{host}:2390")  # node04 in the fixture's config
        assert added.name == "node04"
        assert int(added.ID) == member_id("node04")
        await c.member_remove(added.ID)
        assert [m.name for m in await c.member_list()] == ["node01"]
        assert (await c.status()).version == "3.4.23"
        with pytest.raises(errors.EtcdError) as exc:
            await c.status(dead_endpoint())
        assert exc.value.code == grpc.StatusCode.UNAVAILABLE


async def test_client_leases_and_errors(served: Served) -> None:
    async with ChainfireClient([served.address]) as c:
        lease = await c.lease_grant(30)
        await c.put("session", "me", lease=lease)
        assert await c.lease_keepalive(lease) == 30
        await c.lease_revoke(lease)
        assert await c.get("session") is None
        assert await c.lease_keepalive(lease) == 0
        with pytest.raises(errors.EtcdError) as exc:
            await c.put("k", "v", lease=lease)
        assert exc.value == errors.LEASE_NOT_FOUND


async def test_client_watch(served: Served) -> None:
    async with ChainfireClient([served.address]) as c:
        await c.put("cfg/a", "1")
        events: list[kv_pb2.Event] = []

        async def collect() -> None:
            async for ev in c.watch("cfg/", prefix=True, start_revision=2):
                events.append(ev)
                if len(events) == 3:
                    return

        task = asyncio.create_task(collect())
        await c.put("cfg/b", "2")
        await c.delete("cfg/a")
        await asyncio.wait_for(task, 5)
        assert [(e.type, e.kv.key) for e in events] == [
            (kv_pb2.Event.PUT, b"cfg/a"),
            (kv_pb2.Event.PUT, b"cfg/b"),
            (kv_pb2.Event.DELETE, b"cfg/a"),
        ]
        await c.put("cfg/a", "3")
        await served.kv.Compact(pb.CompactionRequest(revision=served.store.revision))
        with pytest.raises(errors.EtcdError) as exc:
            async for _ in c.watch("cfg/", prefix=True, start_revision=2):
                pass
        assert exc.value == errors.COMPACTED
