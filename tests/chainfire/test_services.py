"""The etcd gRPC services of one in-process member, over a real gRPC channel."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest

from plasmacloud.chainfire import node as chainfire_node
from plasmacloud.chainfire.node import member_id
from plasmacloud.chainfire.proto import kv_pb2
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.common.config import Compaction

from .conftest import Served


async def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError("the call succeeded")


async def test_kv_roundtrip_and_headers(served: Served) -> None:
    r = await served.kv.Put(pb.PutRequest(key=b"foo", value=b"bar"))
    assert r.header.revision == 2
    assert r.header.member_id == member_id("node01") and r.header.cluster_id != 0
    g = await served.kv.Range(pb.RangeRequest(key=b"foo"))
    assert g.kvs[0].value == b"bar" and g.count == 1
    s = await served.kv.Range(pb.RangeRequest(key=b"f", range_end=b"g", serializable=True))
    assert [kv.key for kv in s.kvs] == [b"foo"]
    d = await served.kv.DeleteRange(pb.DeleteRangeRequest(key=b"foo", prev_kv=True))
    assert d.deleted == 1 and d.prev_kvs[0].value == b"bar"
    t = await served.kv.Txn(
        pb.TxnRequest(
            compare=[
                pb.Compare(
                    key=b"foo", target=pb.Compare.VERSION, result=pb.Compare.EQUAL, version=0
                )
            ],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=b"foo", value=b"new"))],
        )
    )
    inner = t.responses[0].response_put.header
    # like etcd, only the outer header is filled in: nested ones carry just a revision
    assert t.succeeded and (inner.member_id, inner.revision) == (0, t.header.revision)
    ro = await served.kv.Txn(
        pb.TxnRequest(success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"foo"))])
    )
    assert ro.responses[0].response_range.kvs[0].value == b"new"
    assert ro.header.revision == t.header.revision  # a read-only txn writes nothing


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        ("empty_range", grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided"),
        ("empty_put", grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided"),
        ("value_provided", grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: value is provided"),
        ("too_large", grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large"),
        ("unknown_lease", grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"),
        (
            "future_rev",
            grpc.StatusCode.OUT_OF_RANGE,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            "duplicate",
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            "too_many_ops",
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: too many operations in txn request",
        ),
        ("empty_op", grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key not found"),
        ("revoke_unknown", grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"),
        (
            "auth",
            grpc.StatusCode.FAILED_PRECONDITION,
            "etcdserver: authentication is not enabled",
        ),
    ],
)
async def test_etcd_error_codes(
    served: Served, call: str, code: grpc.StatusCode, message: str
) -> None:
    put = pb.RequestOp(request_put=pb.PutRequest(key=b"k", value=b"v"))
    calls = {
        "empty_range": lambda: served.kv.Range(pb.RangeRequest()),
        "empty_put": lambda: served.kv.Put(pb.PutRequest(value=b"v")),
        "value_provided": lambda: served.kv.Put(
            pb.PutRequest(key=b"k", value=b"v", ignore_value=True)
        ),
        "too_large": lambda: served.kv.Put(pb.PutRequest(key=b"k", value=b"x" * (1572864 + 1))),
        "unknown_lease": lambda: served.kv.Put(pb.PutRequest(key=b"k", lease=999)),
        "future_rev": lambda: served.kv.Range(pb.RangeRequest(key=b"k", revision=50)),
        "duplicate": lambda: served.kv.Txn(pb.TxnRequest(success=[put, put])),
        "too_many_ops": lambda: served.kv.Txn(
            pb.TxnRequest(
                success=[
                    pb.RequestOp(request_put=pb.PutRequest(key=b"k%d" % i)) for i in range(129)
                ]
            )
        ),
        "empty_op": lambda: served.kv.Txn(pb.TxnRequest(success=[pb.RequestOp()])),
        "revoke_unknown": lambda: served.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=77)),
        "auth": lambda: served.auth.Authenticate(pb.AuthenticateRequest(name="u", password="p")),
    }
    assert await status_of(calls[call]()) == (code, message)
    assert served.store.revision == 1  # nothing was written


async def test_compacted_revision_and_no_leader(served: Served) -> None:
    for i in range(3):
        await served.kv.Put(pb.PutRequest(key=b"k", value=b"%d" % i))
    await served.kv.Compact(pb.CompactionRequest(revision=3))
    assert await status_of(served.kv.Range(pb.RangeRequest(key=b"k", revision=2))) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "etcdserver: mvcc: required revision has been compacted",
    )
    served.raft.leader = None
    assert await status_of(served.kv.Put(pb.PutRequest(key=b"k", value=b"v"))) == (
        grpc.StatusCode.UNAVAILABLE,
        "etcdserver: no leader",
    )
    # serializable reads (and read-only txns made only of them) work without a leader
    r = await served.kv.Range(pb.RangeRequest(key=b"k", serializable=True))
    assert r.kvs[0].value == b"2"
    local = pb.RequestOp(request_range=pb.RangeRequest(key=b"k", serializable=True))
    t = await served.kv.Txn(pb.TxnRequest(success=[local]))
    assert t.responses[0].response_range.kvs[0].value == b"2"
    linear = pb.RequestOp(request_range=pb.RangeRequest(key=b"k"))
    assert await status_of(served.kv.Txn(pb.TxnRequest(success=[local, linear]))) == (
        grpc.StatusCode.UNAVAILABLE,
        "etcdserver: no leader",
    )


async def next_response(call: grpc.aio.StreamStreamCall) -> pb.WatchResponse:
    resp = await asyncio.wait_for(call.read(), 5)
    assert isinstance(resp, pb.WatchResponse)
    return resp


async def test_watch_history_live_filters_cancel(served: Served) -> None:
    await served.kv.Put(pb.PutRequest(key=b"w/a", value=b"1"))  # rev 2
    await served.kv.Put(pb.PutRequest(key=b"w/b", value=b"1"))  # rev 3
    await served.kv.Put(pb.PutRequest(key=b"x", value=b"1"))  # rev 4, outside the prefix
    call = served.watch.Watch()
    await call.write(
        pb.WatchRequest(
            create_request=pb.WatchCreateRequest(
                key=b"w/", range_end=b"w0", start_revision=2, prev_kv=True
            )
        )
    )
    created = await next_response(call)
    assert created.created and created.watch_id == 0
    hist = await next_response(call)
    assert [(e.kv.key, e.kv.mod_revision) for e in hist.events] == [(b"w/a", 2), (b"w/b", 3)]
    # a second watcher on the same stream: deletes only
    await call.write(
        pb.WatchRequest(
            create_request=pb.WatchCreateRequest(
                key=b"w/", range_end=b"w0", filters=[pb.WatchCreateRequest.NOPUT]
            )
        )
    )
    created2 = await next_response(call)
    assert created2.created and created2.watch_id == 1
    await served.kv.Put(pb.PutRequest(key=b"w/a", value=b"2"))
    live = await next_response(call)
    assert live.watch_id == 0 and live.events[0].prev_kv.value == b"1"
    await served.kv.DeleteRange(pb.DeleteRangeRequest(key=b"w/a"))
    got = {}
    for _ in range(2):
        r = await next_response(call)
        got[r.watch_id] = r
    assert got[0].events[0].type == kv_pb2.Event.DELETE
    assert got[1].events[0].type == kv_pb2.Event.DELETE and not got[1].events[0].HasField("prev_kv")
    await call.write(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=0)))
    cancelled = await next_response(call)
    assert cancelled.canceled and cancelled.watch_id == 0
    await served.kv.Put(pb.PutRequest(key=b"w/c", value=b"1"))
    await served.kv.DeleteRange(pb.DeleteRangeRequest(key=b"w/c"))
    only = await next_response(call)
    assert only.watch_id == 1 and only.events[0].kv.key == b"w/c"  # its PUT was filtered
    call.cancel()
    await asyncio.sleep(0.05)
    assert len(served.node.hub) == 0


async def test_watch_compacted_start_and_progress(served: Served) -> None:
    for i in range(4):
        await served.kv.Put(pb.PutRequest(key=b"k", value=b"%d" % i))
    await served.kv.Compact(pb.CompactionRequest(revision=4))
    call = served.watch.Watch()
    await call.write(
        pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k", start_revision=2))
    )
    assert (await next_response(call)).created
    comp = await next_response(call)
    assert comp.canceled and comp.compact_revision == 4
    await call.write(
        pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k", progress_notify=True))
    )
    assert (await next_response(call)).created
    progress = await next_response(call)  # the fixture's progress interval is 0.2 s
    assert not progress.events and progress.header.revision == served.store.revision
    await call.write(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
    assert (await next_response(call)).watch_id in (-1, 1)
    call.cancel()


async def test_watch_events_exactly_once_in_order(served: Served) -> None:
    call = served.watch.Watch()
    await call.write(
        pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"\0", range_end=b"\0"))
    )
    assert (await next_response(call)).created
    writes = [served.kv.Put(pb.PutRequest(key=b"k%d" % (i % 7), value=b"v")) for i in range(60)]
    await asyncio.gather(*writes)
    revs: list[int] = []
    while len(revs) < 60:
        revs.extend(e.kv.mod_revision for e in (await next_response(call)).events)
    assert revs == list(range(2, 62))
    call.cancel()


async def test_leases(served: Served) -> None:
    g = await served.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=10))
    assert g.TTL == 10 and g.ID > 0
    await served.kv.Put(pb.PutRequest(key=b"l1", value=b"v", lease=g.ID))
    ttl = await served.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID, keys=True))
    assert (ttl.TTL, ttl.grantedTTL, list(ttl.keys)) == (10, 10, [b"l1"])
    served.clock.now += 6
    ka = served.lease.LeaseKeepAlive()
    await ka.write(pb.LeaseKeepAliveRequest(ID=g.ID))
    resp = await asyncio.wait_for(ka.read(), 5)
    assert resp.ID == g.ID and resp.TTL == 10
    await ka.write(pb.LeaseKeepAliveRequest(ID=4242))
    assert (await asyncio.wait_for(ka.read(), 5)).TTL == 0  # unknown lease: TTL 0, like etcd
    await ka.done_writing()
    ttl = await served.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=g.ID))
    assert ttl.TTL == 10  # renewed
    missing = await served.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=4242))
    assert missing.TTL == -1
    leases = await served.lease.LeaseLeases(pb.LeaseLeasesRequest())
    assert [s.ID for s in leases.leases] == [g.ID]
    # expiry: the leader's loop revokes the lease and its keys go with it
    served.clock.now += 11
    for _ in range(100):
        if not served.store.leases():
            break
        await asyncio.sleep(0.02)
    assert served.store.leases() == {}
    assert (await served.kv.Range(pb.RangeRequest(key=b"l1"))).count == 0


async def test_cluster_membership(served: Served) -> None:
    host = served.address.split(":")[0]
    ml = await served.cluster.MemberList(pb.MemberListRequest())
    assert [(m.name, list(m.peerURLs), list(m.clientURLs)) for m in ml.members] == [
        ("node01", [f"http://{host}:2380"], [f"http://{host}:2379"])
    ]
    assert member_id("node01") == ml.members[0].ID
    added = await served.cluster.MemberAdd(pb.MemberAddRequest(peerURLs=[f"http://{host}:2390"]))
    assert added.member.name == "node04" and len(added.members) == 2
    assert await status_of(
        served.cluster.MemberAdd(pb.MemberAddRequest(peerURLs=[f"http://{host}:2390"]))
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
    assert await status_of(served.cluster.MemberAdd(pb.MemberAddRequest(peerURLs=["bogus"]))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: given member URLs are invalid",
    )
    removed = await served.cluster.MemberRemove(pb.MemberRemoveRequest(ID=member_id("node04")))
    assert [m.name for m in removed.members] == ["node01"]
    assert await status_of(served.cluster.MemberRemove(pb.MemberRemoveRequest(ID=5))) == (
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: member not found",
    )


async def test_maintenance(served: Served) -> None:
    await served.kv.Put(pb.PutRequest(key=b"a", value=b"1"))
    st = await served.maintenance.Status(pb.StatusRequest())
    assert st.version == "3.4.23" and st.leader == member_id("node01")
    assert st.dbSize > 0 and st.raftIndex == served.raft.index
    h1 = await served.maintenance.HashKV(pb.HashKVRequest())
    h2 = await served.maintenance.HashKV(pb.HashKVRequest(revision=2))
    assert h1.hash == h2.hash
    await served.kv.Put(pb.PutRequest(key=b"b", value=b"1"))
    assert (await served.maintenance.HashKV(pb.HashKVRequest())).hash != h1.hash
    blob = b""
    async for chunk in served.maintenance.Snapshot(pb.SnapshotRequest()):
        blob += chunk.blob
        last = chunk.remaining_bytes
    assert last == 0 and len(blob) % 512 == 32  # etcdctl's hasChecksum()
    assert hashlib.sha256(blob[:-32]).digest() == blob[-32:]
    assert blob.startswith(b"SQLite format 3")
    mid = member_id("node01")
    await served.maintenance.Alarm(
        pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=mid, alarm=pb.NOSPACE)
    )
    alarms = await served.maintenance.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
    assert [(a.memberID, a.alarm) for a in alarms.alarms] == [(mid, pb.NOSPACE)]
    assert await status_of(served.kv.Put(pb.PutRequest(key=b"c", value=b"1"))) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "etcdserver: mvcc: database space exceeded",
    )
    await served.maintenance.Alarm(
        pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=mid, alarm=pb.NOSPACE)
    )
    await served.kv.Put(pb.PutRequest(key=b"c", value=b"1"))
    await served.maintenance.Defragment(pb.DefragmentRequest())


async def test_quota_raises_nospace(served: Served) -> None:
    served.node.quota_bytes = 1  # any database is over this
    assert await status_of(served.kv.Put(pb.PutRequest(key=b"c", value=b"1"))) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "etcdserver: mvcc: database space exceeded",
    )
    assert [a.alarm for a in served.store.alarms()] == [pb.NOSPACE]


async def test_garbage_on_client_port_does_not_hurt(served: Served) -> None:
    host, port = served.address.split(":")
    for junk in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(junk)
        await writer.drain()
        await asyncio.wait_for(reader.read(1024), 5)
        writer.close()
    r = await served.kv.Put(pb.PutRequest(key=b"still", value=b"ok"))
    assert r.header.revision == 2


async def test_undecodable_messages_are_refused_and_change_nothing(served: Served) -> None:
    await served.kv.Put(pb.PutRequest(key=b"keep", value=b"me"))
    for method in (
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.Lease/LeaseGrant",
    ):
        raw = served.channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        for junk in (b"\xff\xff\xff\xff", b"\x0a\x64short", b"\x12"):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await raw(junk, timeout=5)
            # grpcio reports a request it cannot parse as UNKNOWN, naming the parse error
            assert exc.value.code() == grpc.StatusCode.UNKNOWN
            assert "Error parsing message" in (exc.value.details() or "")
    assert served.store.revision == 2 and served.store.leases() == {}
    assert (await served.kv.Range(pb.RangeRequest(key=b"keep"))).kvs[0].value == b"me"


async def test_auto_compaction_keeps_the_retained_revisions(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = served.node
    monkeypatch.setattr(chainfire_node, "REVISION_COMPACTION_INTERVAL_S", 0.02)
    node.compaction = Compaction(mode="revision", retention="3")
    await node.stop()
    await node.start()  # restart the loops with auto-compaction on
    for i in range(10):
        await served.kv.Put(pb.PutRequest(key=b"k", value=b"%d" % i))
    for _ in range(200):  # the loop may compact mid-way; wait for it to catch up
        if served.store.compact_revision == served.store.revision - 3:
            break
        await asyncio.sleep(0.02)
    assert served.store.compact_revision == served.store.revision - 3
    assert (await served.kv.Range(pb.RangeRequest(key=b"k", revision=8))).kvs[0].value == b"6"


async def test_periodic_auto_compaction_keeps_one_period_of_history(served: Served) -> None:
    """Mode periodic compacts up to the revision sampled one period ago, and no further."""
    node = served.node
    node.compaction = Compaction(mode="periodic", retention="1s")  # sampled every 0.1 s
    await node.stop()
    await node.start()
    await served.kv.Put(pb.PutRequest(key=b"old", value=b"1"))
    old = served.store.revision
    await asyncio.sleep(1.5)  # one period and then some
    await served.kv.Put(pb.PutRequest(key=b"new", value=b"2"))
    for _ in range(100):
        if served.store.compact_revision >= old:
            break
        await asyncio.sleep(0.05)
    assert old <= served.store.compact_revision < served.store.revision
    assert (await served.kv.Range(pb.RangeRequest(key=b"new"))).kvs[0].value == b"2"
