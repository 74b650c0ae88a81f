"""Lock and Election services: ownership order, fencing revisions, release on lease loss."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.proto import v3election_pb2 as el
from plasmacloud.chainfire.proto import v3election_pb2_grpc, v3lock_pb2, v3lock_pb2_grpc

from .conftest import Served


async def grant(served: Served, ttl: int = 30) -> int:
    return int((await served.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl))).ID)


async def test_lock_is_exclusive_and_ordered(served: Served) -> None:
    lock = v3lock_pb2_grpc.LockStub(served.channel)
    l1, l2 = await grant(served), await grant(served)
    first = await lock.Lock(v3lock_pb2.LockRequest(name=b"job", lease=l1))
    assert first.key == b"job/" + f"{l1:x}".encode()
    token1 = (await served.kv.Range(pb.RangeRequest(key=first.key))).kvs[0].create_revision
    waiting = asyncio.ensure_future(lock.Lock(v3lock_pb2.LockRequest(name=b"job", lease=l2)))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # the second holder waits for the first
    await lock.Unlock(v3lock_pb2.UnlockRequest(key=first.key))
    second = await asyncio.wait_for(waiting, 5)
    token2 = (await served.kv.Range(pb.RangeRequest(key=second.key))).kvs[0].create_revision
    assert token2 > token1  # the fencing token only grows
    # losing the lease releases the lock
    waiting = asyncio.ensure_future(lock.Lock(v3lock_pb2.LockRequest(name=b"job", lease=l1)))
    await asyncio.sleep(0.1)
    await served.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=l2))
    third = await asyncio.wait_for(waiting, 5)
    assert third.key == first.key
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await lock.Lock(v3lock_pb2.LockRequest(name=b"job", lease=999))
    # etcd's lock service reports its client's error: the message, code UNKNOWN
    assert (exc.value.code(), exc.value.details()) == (
        grpc.StatusCode.UNKNOWN,
        "etcdserver: requested lease not found",
    )


async def test_election_campaign_proclaim_observe_resign(served: Served) -> None:
    election = v3election_pb2_grpc.ElectionStub(served.channel)
    l1, l2 = await grant(served), await grant(served)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await election.Leader(el.LeaderRequest(name=b"svc"))
    assert exc.value.details() == "election: no leader"
    observe = election.Observe(el.LeaderRequest(name=b"svc"))
    won = await election.Campaign(el.CampaignRequest(name=b"svc", lease=l1, value=b"a"))
    assert won.leader.key == b"svc/" + f"{l1:x}".encode()
    seen = await asyncio.wait_for(observe.read(), 5)
    assert seen.kv.value == b"a"
    await election.Proclaim(el.ProclaimRequest(leader=won.leader, value=b"a2"))
    assert (await asyncio.wait_for(observe.read(), 5)).kv.value == b"a2"
    assert (await election.Leader(el.LeaderRequest(name=b"svc"))).kv.value == b"a2"
    challenger = asyncio.ensure_future(
        election.Campaign(el.CampaignRequest(name=b"svc", lease=l2, value=b"b"))
    )
    await asyncio.sleep(0.2)
    assert not challenger.done()
    stale = el.LeaderKey(name=b"svc", key=won.leader.key, rev=won.leader.rev - 1, lease=l1)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await election.Proclaim(el.ProclaimRequest(leader=stale, value=b"x"))
    assert exc.value.details() == "election: not leader"
    await election.Resign(el.ResignRequest(leader=won.leader))
    second = await asyncio.wait_for(challenger, 5)
    assert second.leader.rev > won.leader.rev
    assert (await asyncio.wait_for(observe.read(), 5)).kv.value == b"b"
    observe.cancel()
