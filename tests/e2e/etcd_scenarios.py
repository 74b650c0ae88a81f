"""Hand-written differential scenarios: what generated sequences cannot pin down (timers,
streams kept open, shapes of cluster status). Each takes one side and returns plain,
normalised data (see etcd_differential.Ctx); the test compares etcd's with Chainfire's."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.proto import (
    v3election_pb2,
    v3election_pb2_grpc,
    v3lock_pb2,
    v3lock_pb2_grpc,
)

from .etcd_differential import (
    CALL_TIMEOUT,
    MISSING_LEASE,
    Ctx,
    LeaseGrant,
    Side,
    WatchSession,
    reset,
)

# etcd's progress notify interval as both clusters run in this test (seconds)
PROGRESS_INTERVAL = 1.0


async def start(side: Side) -> Ctx:
    """A clean slate (no keys, no leases) and a context relative to it."""
    return Ctx(side, await reset(side))


async def lease_edges(side: Side) -> list[Any]:
    """Grants at the edges (TTL 0, negative, below the minimum, explicit odd IDs) and the
    TTL TimeToLive reports right after a grant (how the time left is rounded)."""
    ctx = await start(side)
    out = []
    for ttl, lease_id in ((0, 0), (-5, 0), (1, 0), (60, 77), (60, -3)):
        grant = await LeaseGrant(ttl, lease_id).run(ctx)
        out.append(grant)
        if isinstance(grant, dict):
            raw = ctx.granted[-1]
            ttl_left = await ctx.call(side.lease.LeaseTimeToLive, pb.LeaseTimeToLiveRequest(ID=raw))
            out.append(ttl_left)
            out.append(await ctx.call(side.lease.LeaseRevoke, pb.LeaseRevokeRequest(ID=raw)))
    return out


async def lease_expiry(side: Side) -> list[Any]:
    """A lease left alone expires: its key is deleted (one event, one revision), then the
    lease is gone for TimeToLive, keep-alive, revoke and Leases."""
    ctx = await start(side)
    grant = await side.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=2), timeout=CALL_TIMEOUT)
    ctx.granted.append(grant.ID)
    out: list[Any] = [ctx.answer(grant)]
    out.append(await ctx.call(side.kv.Put, pb.PutRequest(key=b"e", value=b"v", lease=grant.ID)))
    session = WatchSession(side.watch)
    try:
        session.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"e", prev_kv=True)))
        expired = await session.wait_for(lambda rs: any(r.events for r in rs), timeout=15.0)
        out.append(expired)
        out.append([ctx.plain(ev) for r in session.responses for ev in r.events])
    finally:
        await session.close()
    out.append(await ctx.call(side.kv.Range, pb.RangeRequest(key=b"e")))
    ttl = pb.LeaseTimeToLiveRequest(ID=grant.ID, keys=True)
    out.append(await ctx.call(side.lease.LeaseTimeToLive, ttl))
    out.append(await ctx.call(side.lease.LeaseRevoke, pb.LeaseRevokeRequest(ID=grant.ID)))
    out.append(await ctx.call(side.lease.LeaseLeases, pb.LeaseLeasesRequest()))
    return out


async def keep_alive_stream(side: Side) -> list[Any]:
    """Several keep-alives on one stream: a live lease, a missing one, the live one again."""
    ctx = await start(side)
    grant = await side.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60), timeout=CALL_TIMEOUT)
    ctx.granted.append(grant.ID)
    queue: asyncio.Queue[pb.LeaseKeepAliveRequest | None] = asyncio.Queue()

    async def requests() -> Any:
        while (req := await queue.get()) is not None:
            yield req

    call = side.lease.LeaseKeepAlive(requests(), timeout=CALL_TIMEOUT)
    out = []
    try:
        for lease_id in (grant.ID, MISSING_LEASE, grant.ID):
            queue.put_nowait(pb.LeaseKeepAliveRequest(ID=lease_id))
            out.append(ctx.answer(await call.read()))
    finally:
        queue.put_nowait(None)
        call.cancel()
    return out


async def txn_limits(side: Side) -> list[Any]:
    """etcd's --max-txn-ops (128): one more op is refused, before anything else."""
    ctx = await start(side)

    def puts(n: int) -> pb.TxnRequest:
        ops = [pb.RequestOp(request_put=pb.PutRequest(key=b"t%03d" % i)) for i in range(n)]
        return pb.TxnRequest(success=ops)

    empty = pb.TxnRequest(success=[pb.RequestOp()])
    mib = 1024 * 1024
    return [
        await ctx.call(side.kv.Txn, puts(128)),
        await ctx.call(side.kv.Txn, puts(129)),
        await ctx.call(side.kv.Txn, empty),
        # etcd's --max-request-bytes (1.5 MiB)
        await ctx.call(side.kv.Put, pb.PutRequest(key=b"big", value=bytes(mib + mib // 3))),
        await ctx.call(side.kv.Put, pb.PutRequest(key=b"big", value=bytes(mib + mib // 2))),
    ]


async def negative_revisions(side: Side) -> list[Any]:
    """A negative revision means the latest in a Range, but not inside a Txn once
    anything was compacted (etcd checks it against the compacted revision there)."""
    ctx = await start(side)
    out = [await ctx.call(side.kv.Put, pb.PutRequest(key=b"n", value=b"1"))]
    out.append(await ctx.call(side.kv.Compact, pb.CompactionRequest(revision=ctx.current)))
    rng = pb.RangeRequest(key=b"n", revision=-1)
    out.append(await ctx.call(side.kv.Range, rng))
    txn = pb.TxnRequest(success=[pb.RequestOp(request_range=rng)])
    out.append(await ctx.call(side.kv.Txn, txn))
    return out


async def maintenance_answers(side: Side) -> list[Any]:
    """HashKV's revision checks and compact revision, Alarm list, Defragment."""
    ctx = await start(side)
    await side.kv.Put(pb.PutRequest(key=b"h", value=b"1"), timeout=CALL_TIMEOUT)
    await side.kv.Put(pb.PutRequest(key=b"h", value=b"2"), timeout=CALL_TIMEOUT)
    await side.kv.Compact(pb.CompactionRequest(revision=ctx.base + 1), timeout=CALL_TIMEOUT)
    out = []
    for rel in (0, 5, -1):
        resp = await ctx.call(
            side.maintenance.HashKV, pb.HashKVRequest(revision=ctx.base + 2 + rel)
        )
        if isinstance(resp, dict):
            resp.pop("hash")  # the hash of the stored data is implementation-specific
        out.append(resp)
    out.append(await ctx.call(side.maintenance.Defragment, pb.DefragmentRequest()))
    return out


async def nospace_alarm(side: Side) -> list[Any]:
    """With NOSPACE raised, whatever adds data is refused and reads still work; the alarm
    is listed for its member until it is disarmed."""
    ctx = await start(side)
    me = (await side.maintenance.Status(pb.StatusRequest(), timeout=CALL_TIMEOUT)).header.member_id

    async def alarm(action: int) -> Any:
        req = pb.AlarmRequest(action=action, memberID=me, alarm=pb.NOSPACE)  # type: ignore[arg-type]
        resp = await ctx.call(side.maintenance.Alarm, req)
        for a in resp.get("alarms", []) if isinstance(resp, dict) else []:
            a["memberID"] = "self" if a["memberID"] == me else a["memberID"]
        return resp

    put = pb.RequestOp(request_put=pb.PutRequest(key=b"s"))
    out = [
        await alarm(pb.AlarmRequest.ACTIVATE),
        await alarm(pb.AlarmRequest.GET),
        await ctx.call(side.kv.Put, pb.PutRequest(key=b"s", value=b"1")),
        await ctx.call(side.kv.Txn, pb.TxnRequest(failure=[put])),
        await ctx.call(
            side.kv.Txn,
            pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"s"))]),
        ),
        await ctx.call(side.kv.DeleteRange, pb.DeleteRangeRequest(key=b"s")),
        await ctx.call(side.lease.LeaseGrant, pb.LeaseGrantRequest(TTL=60)),
        await alarm(pb.AlarmRequest.DEACTIVATE),
        await alarm(pb.AlarmRequest.GET),
        await ctx.call(side.kv.Put, pb.PutRequest(key=b"s", value=b"1")),
    ]
    return out


async def progress(side: Side) -> list[Any]:
    """Progress notifications: an idle watcher that asked gets one per interval, a busy
    one none; a progress request is answered at once."""
    ctx = await start(side)
    session = WatchSession(side.watch)
    try:
        create = pb.WatchCreateRequest(key=b"p", progress_notify=True)
        session.send(pb.WatchRequest(create_request=create))
        await session.wait_for(lambda rs: len(rs) >= 1)
        got = await session.wait_for(lambda rs: len(rs) >= 2, timeout=4 * PROGRESS_INTERVAL)
        out: list[Any] = [[ctx.plain(r) for r in session.responses], got]
        # busy: an event every quarter interval for three intervals
        seen = len(session.responses)
        for i in range(12):
            await side.kv.Put(pb.PutRequest(key=b"p", value=b"%d" % i), timeout=CALL_TIMEOUT)
            await asyncio.sleep(PROGRESS_INTERVAL / 4)
        busy = session.responses[seen:]
        out.append(sum(1 for r in busy if not r.events))
        session.send(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
        n = len(session.responses)
        await session.wait_for(lambda rs: any(not r.events for r in rs[n:]), timeout=5.0)
        out.append([ctx.plain(r) for r in session.responses[n:] if not r.events][:1])
    finally:
        await session.close()
    return out


async def cluster_shape(side: Side) -> dict[str, Any]:
    """Status and MemberList: which fields are set and how they relate (IDs differ)."""
    status = await side.maintenance.Status(pb.StatusRequest(), timeout=CALL_TIMEOUT)
    members = await side.cluster.MemberList(pb.MemberListRequest(), timeout=CALL_TIMEOUT)
    ids = {m.ID for m in members.members}
    return {
        "status_fields": sorted(fd.name for fd, _ in status.ListFields()),
        "header_fields": sorted(fd.name for fd, _ in status.header.ListFields()),
        "version": status.version,
        "leader_is_member": status.leader in ids,
        "self_is_member": status.header.member_id in ids,
        "applied_le_index": 0 < status.raftAppliedIndex <= status.raftIndex,
        "db_sizes": 0 < status.dbSizeInUse <= status.dbSize,
        "members_fields": sorted(fd.name for fd, _ in members.ListFields()),
        "member_fields": [sorted(fd.name for fd, _ in m.ListFields()) for m in members.members],
        "names": sorted(m.name for m in members.members),
        "urls": sorted(
            (
                len(m.peerURLs),
                m.peerURLs[0].split(":")[0],
                len(m.clientURLs),
                m.clientURLs[0].split(":")[0],
            )
            for m in members.members
        ),
        "same_cluster": status.header.cluster_id == members.header.cluster_id != 0,
    }


async def errors_outside_kv(side: Side) -> list[Any]:
    """Error codes and messages of calls the generated sequences do not make."""
    ctx = await start(side)
    out = []
    calls: list[tuple[Any, Any]] = [
        (side.cluster.MemberRemove, pb.MemberRemoveRequest(ID=12345)),
        (side.cluster.MemberPromote, pb.MemberPromoteRequest(ID=12345)),
        (side.kv.Range, pb.RangeRequest(key=b"")),
        (side.lease.LeaseRevoke, pb.LeaseRevokeRequest(ID=0)),
        (side.auth.Authenticate, pb.AuthenticateRequest(name="root", password="x")),
    ]
    for rpc, req in calls:
        with contextlib.suppress(grpc.aio.AioRpcError):
            out.append(await ctx.call(rpc, req))
    return out


async def watch_requests(side: Side) -> list[Any]:
    """Watch requests the generated sequences do not send: cancelling an unknown ID (no
    answer), an empty key, fragmenting asked for, a progress request with no watcher."""
    ctx = await start(side)
    session = WatchSession(side.watch)
    try:
        for req in (
            pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=99)),
            pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"")),
            pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"f", fragment=True)),
            pb.WatchRequest(progress_request=pb.WatchProgressRequest()),
        ):
            session.send(req)
        await session.wait_for(lambda rs: len(rs) >= 3)
        await side.kv.Put(pb.PutRequest(key=b"f", value=b"1"), timeout=CALL_TIMEOUT)
        await session.wait_for(lambda rs: any(r.events for r in rs))
        return [ctx.plain(r) for r in session.responses]
    finally:
        await session.close()


async def watch_headers(side: Side) -> list[Any]:
    """The revision event responses report: the store's when catching up on history, the
    change's own for a live change (batching of history is compared too, as nothing else
    is written meanwhile)."""
    ctx = await start(side)
    for key in (b"h", b"h", b"other"):
        await side.kv.Put(pb.PutRequest(key=key, value=b"v"), timeout=CALL_TIMEOUT)
    session = WatchSession(side.watch)
    try:
        create = pb.WatchCreateRequest(key=b"h", start_revision=ctx.base + 1)
        session.send(pb.WatchRequest(create_request=create))
        await session.wait_for(lambda rs: any(r.events for r in rs))
        for key in (b"h", b"other"):
            await side.kv.Put(pb.PutRequest(key=key, value=b"live"), timeout=CALL_TIMEOUT)
        await session.wait_for(lambda rs: sum(len(r.events) for r in rs) >= 3)
        return [ctx.plain(r) for r in session.responses]
    finally:
        await session.close()


async def odd_enums(side: Side) -> list[Any]:
    """Enum values outside the proto's (proto3 enums are open): a sort order, compare
    targets and results, watch filters. (Not a sort target: etcd 3.4 crashes on one.)"""
    ctx = await start(side)
    for key, value in ((b"a", b"2"), (b"b", b"1"), (b"c", b"3")):
        await side.kv.Put(pb.PutRequest(key=key, value=value), timeout=CALL_TIMEOUT)
    out = []
    for order, target in ((7, 0), (7, 4)):  # 4: by value (which is not in key order)
        rng = pb.RangeRequest(key=b"a", range_end=b"d")
        rng.sort_order, rng.sort_target = order, target  # type: ignore[assignment]
        out.append(await ctx.call(side.kv.Range, rng))
    for target, result in ((9, 0), (0, 9), (9, 9)):
        cmp = pb.Compare(key=b"a", version=1)
        cmp.target, cmp.result = target, result  # type: ignore[assignment]
        out.append(await ctx.call(side.kv.Txn, pb.TxnRequest(compare=[cmp])))
    session = WatchSession(side.watch)
    try:
        create = pb.WatchCreateRequest(key=b"a", filters=[5])  # type: ignore[list-item]
        session.send(pb.WatchRequest(create_request=create))
        await session.wait_for(lambda rs: len(rs) >= 1)
        await side.kv.Put(pb.PutRequest(key=b"a", value=b"x"), timeout=CALL_TIMEOUT)
        await session.wait_for(lambda rs: len(rs) >= 2, timeout=3.0)
        out.append([ctx.plain(r) for r in session.responses])
    finally:
        await session.close()
    return out


def _lease_names(ctx: Ctx, data: Any) -> Any:
    """``data`` with every lease ID written in hex inside a key (the lock and election
    recipes name keys ``<name>/<lease hex>``) replaced by the lease's label."""
    if isinstance(data, dict):
        return {k: _lease_names(ctx, v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(_lease_names(ctx, v) for v in data)
    if isinstance(data, bytes):
        for raw in ctx.granted:
            data = data.replace(b"%x" % raw, str(ctx.norm_lease(raw)).encode())
    return data


async def lock_service(side: Side) -> list[Any]:
    """v3lock: Lock names its key after the lease, a missing lease fails, Unlock deletes."""
    ctx = await start(side)
    lock = v3lock_pb2_grpc.LockStub(side.channel)
    await LeaseGrant(60).run(ctx)
    held = await lock.Lock(
        v3lock_pb2.LockRequest(name=b"lk", lease=ctx.granted[0]), timeout=CALL_TIMEOUT
    )
    out = [
        ctx.answer(held),
        await ctx.call(lock.Lock, v3lock_pb2.LockRequest(name=b"lk", lease=MISSING_LEASE)),
        await ctx.call(side.kv.Range, pb.RangeRequest(key=b"lk/", range_end=b"lk0")),
        await ctx.call(lock.Unlock, v3lock_pb2.UnlockRequest(key=held.key)),
        await ctx.call(lock.Unlock, v3lock_pb2.UnlockRequest(key=b"lk/none")),
        await ctx.call(side.kv.Range, pb.RangeRequest(key=b"lk/", range_end=b"lk0")),
        await ctx.call(lock.Lock, v3lock_pb2.LockRequest(name=b"", lease=ctx.granted[0])),
        await ctx.call(lock.Unlock, v3lock_pb2.UnlockRequest(key=b"")),
    ]
    return _lease_names(ctx, out)


async def election_service(side: Side) -> list[Any]:
    """v3election: campaign, leader, proclaim (by the leader and by a stranger), resign,
    and the answers once nobody leads."""
    ctx = await start(side)
    el = v3election_pb2_grpc.ElectionStub(side.channel)
    await LeaseGrant(60).run(ctx)
    won = await el.Campaign(
        v3election_pb2.CampaignRequest(name=b"el", lease=ctx.granted[0], value=b"v1"),
        timeout=CALL_TIMEOUT,
    )
    stranger = v3election_pb2.LeaderKey(name=b"el", key=b"el/none", rev=won.leader.rev, lease=1)
    leader = v3election_pb2.LeaderRequest(name=b"el")
    out = [
        ctx.answer(won),
        await ctx.call(el.Leader, leader),
        await ctx.call(el.Proclaim, v3election_pb2.ProclaimRequest(leader=won.leader, value=b"v2")),
        await ctx.call(el.Proclaim, v3election_pb2.ProclaimRequest(leader=stranger, value=b"v3")),
        await ctx.call(el.Leader, leader),
        await ctx.call(el.Resign, v3election_pb2.ResignRequest(leader=won.leader)),
        await ctx.call(el.Leader, leader),
        await ctx.call(el.Resign, v3election_pb2.ResignRequest(leader=won.leader)),
        await ctx.call(
            el.Campaign, v3election_pb2.CampaignRequest(name=b"el", lease=MISSING_LEASE)
        ),
        await ctx.call(el.Proclaim, v3election_pb2.ProclaimRequest(value=b"v4")),
        await ctx.call(el.Resign, v3election_pb2.ResignRequest()),
        await ctx.call(el.Campaign, v3election_pb2.CampaignRequest(lease=ctx.granted[0])),
        await ctx.call(el.Leader, v3election_pb2.LeaderRequest()),
        # the same lease campaigns again with another value: it keeps its key
        await ctx.call(
            el.Campaign, v3election_pb2.CampaignRequest(lease=ctx.granted[0], value=b"v5")
        ),
        await ctx.call(el.Leader, v3election_pb2.LeaderRequest()),
    ]
    return _lease_names(ctx, out)


async def election_observe(side: Side) -> list[Any]:
    """Observe: nothing until someone leads, then the leader and each value it proclaims."""
    ctx = await start(side)
    el = v3election_pb2_grpc.ElectionStub(side.channel)
    await LeaseGrant(60).run(ctx)
    seen: list[Any] = []
    call = el.Observe(v3election_pb2.LeaderRequest(name=b"ob"), timeout=CALL_TIMEOUT)

    async def read() -> None:
        async for resp in call:
            seen.append(ctx.plain(resp))

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(0.2)  # observing before anyone campaigns
        won = await el.Campaign(
            v3election_pb2.CampaignRequest(name=b"ob", lease=ctx.granted[0], value=b"v1"),
            timeout=CALL_TIMEOUT,
        )
        proclaim = v3election_pb2.ProclaimRequest(leader=won.leader, value=b"v2")
        await el.Proclaim(proclaim, timeout=CALL_TIMEOUT)
        for _ in range(50):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await reader
    return _lease_names(ctx, seen)
