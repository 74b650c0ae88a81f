"""Behaviours the differential test against etcd 3.4 (tests/e2e/test_etcd_differential.py)
found Chainfire getting wrong, one focused test each: the generated sequences need not hit
them on every run."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.leases import LeaseTimers
from plasmacloud.chainfire.mvcc import MvccStore, WatchEvent
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.proto import (
    v3election_pb2,
    v3election_pb2_grpc,
    v3lock_pb2,
    v3lock_pb2_grpc,
)
from plasmacloud.chainfire.services.kv import check_txn
from plasmacloud.chainfire.services.watch import _Stream

from .conftest import Applier, FakeClock, Served


def _put(key: bytes, **kw: object) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, **kw))


def _delete(key: bytes, range_end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=range_end))


def _get(key: bytes, **kw: object) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, **kw))


def test_compacting_at_zero_succeeds_once_on_a_never_compacted_store(
    apply: Applier, store: MvccStore
) -> None:
    # etcd's compactMainRev starts at -1
    assert isinstance(apply(pb.CompactionRequest(revision=0)), pb.CompactionResponse)
    assert apply(pb.CompactionRequest(revision=0)) == errors.COMPACTED


def test_each_txn_response_carries_the_revision_as_of_its_op(
    apply: Applier, store: MvccStore
) -> None:
    apply(pb.PutRequest(key=b"b", value=b"1"))
    rev = store.revision
    r = apply(
        pb.TxnRequest(
            success=[
                _delete(b"nothing"),  # before any change: the old revision
                _get(b"b"),
                _delete(b"b"),  # changes: the new one from here on
                _get(b"b"),
                _delete(b"nothing"),
                pb.RequestOp(request_txn=pb.TxnRequest(success=[_get(b"b")])),
            ]
        )
    )
    revs = [getattr(out, out.WhichOneof("response")).header.revision for out in r.responses]
    assert revs == [rev, rev, rev + 1, rev + 1, rev + 1, 0]  # a nested txn's header is empty
    assert r.responses[5].response_txn.responses[0].response_range.header.revision == rev + 1
    assert r.header.revision == rev + 1


def test_put_looks_up_its_lease_before_its_key_but_a_txn_put_the_key_first(
    apply: Applier,
) -> None:
    unknown = pb.PutRequest(key=b"absent", ignore_value=True, lease=4242)
    assert apply(unknown) == errors.LEASE_NOT_FOUND
    assert apply(pb.TxnRequest(success=[pb.RequestOp(request_put=unknown)])) == errors.KEY_NOT_FOUND


def test_txn_checks_every_put_before_any_range(apply: Applier, store: MvccStore) -> None:
    future = store.revision + 5
    txn = pb.TxnRequest(
        success=[
            _get(b"a", revision=future),
            pb.RequestOp(request_txn=pb.TxnRequest(success=[_put(b"x", lease=4242)])),
        ]
    )
    assert apply(txn) == errors.LEASE_NOT_FOUND  # not the range's future revision


async def _created(call: grpc.aio.StreamStreamCall, **create: object) -> pb.WatchResponse:
    await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(**create)))
    resp = await asyncio.wait_for(call.read(), 5)
    assert isinstance(resp, pb.WatchResponse) and resp.created
    return resp


async def test_watch_on_an_empty_range_is_refused_with_id_minus_one(served: Served) -> None:
    call = served.watch.Watch()
    refused = await _created(call, key=b"c", range_end=b"a")
    assert (refused.watch_id, refused.canceled, refused.cancel_reason) == (
        -1,
        True,
        "mvcc: watcher range is empty",
    )
    assert (await _created(call, key=b"c", range_end=b"\0")).watch_id == 0  # ">= c" is fine
    call.cancel()


async def test_watch_ids_are_never_reused_and_duplicates_get_minus_one(served: Served) -> None:
    call = served.watch.Watch()
    assert (await _created(call, key=b"a", watch_id=1)).watch_id == 1
    assert (await _created(call, key=b"a")).watch_id == 0
    await call.write(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=0)))
    assert (await asyncio.wait_for(call.read(), 5)).canceled
    assert (await _created(call, key=b"a")).watch_id == 2  # 0 is free again, 1 is taken
    dup = await _created(call, key=b"a", watch_id=2)
    assert (dup.watch_id, dup.canceled, dup.cancel_reason) == (
        -1,
        True,
        "mvcc: duplicate watch ID provided on the WatchStream",
    )
    call.cancel()


def test_a_from_key_delete_does_not_clash_with_a_put_in_the_same_txn(
    apply: Applier, store: MvccStore
) -> None:
    # etcd's checkIntervals compares range ends as plain bytes: [ab, "\0") is empty there
    txn = pb.TxnRequest(success=[_delete(b"ab", b"\0"), _put(b"ab", value=b"x")])
    check_txn(txn)
    apply(pb.PutRequest(key=b"b", value=b"1"))
    r = apply(txn)
    assert r.header.revision == store.revision  # one revision: the delete, then the put
    assert [kv.key for kv in store.range(pb.RangeRequest(key=b"a", range_end=b"\0")).kvs] == [b"ab"]
    with pytest.raises(errors.EtcdError) as exc:  # a real range still clashes
        check_txn(pb.TxnRequest(success=[_delete(b"a", b"b"), _put(b"ab")]))
    assert exc.value == errors.DUPLICATE_KEY


def test_time_to_live_rounds_the_time_left_down() -> None:
    clock = FakeClock()
    timers = LeaseTimers(clock)
    timers.renew(1, 60)
    assert timers.remaining(1) == 60  # no time has passed
    clock.now += 0.001
    assert timers.remaining(1) == 59  # etcd: int(59.999 s)
    clock.now += 60
    assert timers.remaining(1) == 0


def test_a_txn_range_at_a_negative_revision_is_compacted(apply: Applier, store: MvccStore) -> None:
    read = pb.TxnRequest(success=[_get(b"a", revision=-1)])
    assert apply(read).succeeded  # nothing compacted yet: -1 is not below -1
    assert apply(pb.TxnRequest(success=[_get(b"a", revision=-2)])) == errors.COMPACTED
    apply(pb.PutRequest(key=b"a", value=b"1"))
    apply(pb.CompactionRequest(revision=store.revision))
    assert apply(read) == errors.COMPACTED
    assert store.range(pb.RangeRequest(key=b"a", revision=-1)).kvs[0].value == b"1"


def test_hash_kv_at_the_compacted_revision_is_compacted(apply: Applier, store: MvccStore) -> None:
    apply(pb.PutRequest(key=b"a"), pb.PutRequest(key=b"a"))
    apply(pb.CompactionRequest(revision=2))
    with pytest.raises(errors.EtcdError) as exc:
        store.hash_kv(2)
    assert exc.value == errors.COMPACTED
    assert store.hash_kv(3)[1:] == (2, 3)


async def test_promoting_an_unknown_member_is_not_found(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await served.cluster.MemberPromote(pb.MemberPromoteRequest(ID=12345))
    assert (exc.value.code(), exc.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "etcdserver: member not found",
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await served.cluster.MemberPromote(pb.MemberPromoteRequest(ID=served.node.member_id))
    assert exc.value.details() == "etcdserver: can only promote a learner member"


async def test_alarm_and_defragment_answers_have_no_header(served: Served) -> None:
    get = await served.maintenance.Alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET))
    arm = pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=1, alarm=pb.NOSPACE)
    armed = await served.maintenance.Alarm(arm)
    defrag = await served.maintenance.Defragment(pb.DefragmentRequest())
    assert not any(r.HasField("header") for r in (get, armed, defrag))
    assert [a.alarm for a in armed.alarms] == [pb.NOSPACE]


def test_progress_ticks_skip_watchers_that_just_had_events(served: Served) -> None:
    stream = _Stream(served.node)
    stream.create(pb.WatchCreateRequest(key=b"k", progress_notify=True))
    stream.create(pb.WatchCreateRequest(key=b"quiet"))  # did not ask: never notified
    watcher = stream.watchers[0]
    assert stream.queue.get_nowait().created and stream.queue.get_nowait().created
    stream._deliver(watcher, [WatchEvent(2, b"k", (b"k", 2, 2, 1, b"v", 0), None)], 2)
    assert stream.queue.get_nowait().events
    stream.progress()  # events since the last tick: nothing to tell
    assert stream.queue.empty()
    stream.progress()
    notice = stream.queue.get_nowait()
    assert (notice.watch_id, list(notice.events)) == (0, []) and stream.queue.empty()
    stream.close()


async def test_a_compacted_watchers_id_stays_taken_until_cancelled(served: Served) -> None:
    for value in (b"1", b"2", b"3"):
        await served.kv.Put(pb.PutRequest(key=b"k", value=value))
    await served.kv.Compact(pb.CompactionRequest(revision=3))
    call = served.watch.Watch()
    assert (await _created(call, key=b"k", start_revision=2, watch_id=5)).watch_id == 5
    ended = await asyncio.wait_for(call.read(), 5)
    assert (ended.watch_id, ended.canceled, ended.compact_revision) == (5, True, 3)
    assert (await _created(call, key=b"k", watch_id=5)).watch_id == -1  # still taken
    await call.write(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=5)))
    cancelled = await asyncio.wait_for(call.read(), 5)
    assert (cancelled.watch_id, cancelled.canceled, cancelled.compact_revision) == (5, True, 0)
    assert (await _created(call, key=b"k", watch_id=5)).watch_id == 5  # free again
    call.cancel()


async def test_history_is_delivered_as_of_the_current_revision(served: Served) -> None:
    for key in (b"h", b"h", b"other"):
        await served.kv.Put(pb.PutRequest(key=key, value=b"v"))  # revisions 2, 3, 4
    call = served.watch.Watch()
    await _created(call, key=b"h", start_revision=2)
    history = await asyncio.wait_for(call.read(), 5)
    assert [e.kv.mod_revision for e in history.events] == [2, 3]
    assert history.header.revision == 4  # etcd: the store's revision when it caught up
    await served.kv.Put(pb.PutRequest(key=b"h", value=b"live"))
    await served.kv.Put(pb.PutRequest(key=b"other", value=b"v"))
    live = await asyncio.wait_for(call.read(), 5)
    assert live.header.revision == live.events[0].kv.mod_revision == 5  # a live change: its own
    call.cancel()


def test_a_sort_order_outside_the_enum_leaves_key_order(apply: Applier, store: MvccStore) -> None:
    apply(*(pb.PutRequest(key=k, value=v) for k, v in ((b"a", b"2"), (b"b", b"1"), (b"c", b"3"))))
    req = pb.RangeRequest(key=b"a", range_end=b"d", sort_target=pb.RangeRequest.VALUE)
    req.sort_order = 7  # type: ignore[assignment]
    assert [kv.key for kv in store.range(req).kvs] == [b"a", b"b", b"c"]


async def test_lock_takes_an_empty_name_and_reports_errors_as_unknown(served: Served) -> None:
    lock = v3lock_pb2_grpc.LockStub(served.channel)
    lease = (await served.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60))).ID
    held = await lock.Lock(v3lock_pb2.LockRequest(lease=lease))
    assert held.key == b"/%x" % lease  # etcd's mutex under the prefix "/"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await lock.Unlock(v3lock_pb2.UnlockRequest())
    assert (exc.value.code(), exc.value.details()) == (
        grpc.StatusCode.UNKNOWN,
        "etcdserver: key is not provided",
    )


async def test_campaign_writes_once_and_answers_as_of_its_txn(served: Served) -> None:
    election = v3election_pb2_grpc.ElectionStub(served.channel)
    lease = (await served.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60))).ID
    rev = served.store.revision
    won = await election.Campaign(
        v3election_pb2.CampaignRequest(name=b"e", lease=lease, value=b"1")
    )
    assert won.header.revision == won.leader.rev == served.store.revision == rev + 1
    again = await election.Campaign(
        v3election_pb2.CampaignRequest(name=b"e", lease=lease, value=b"1")
    )
    assert served.store.revision == rev + 1  # same lease, same value: nothing written
    assert again.leader.rev == won.leader.rev
    await election.Campaign(v3election_pb2.CampaignRequest(name=b"e", lease=lease, value=b"2"))
    leader = await election.Leader(v3election_pb2.LeaderRequest(name=b"e"))
    assert (leader.kv.value, leader.kv.version) == (b"2", 2)  # a new value: proclaimed
