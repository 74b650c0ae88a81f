"""Behaviours the differential test against etcd 3.4 (tests/e2e/test_etcd_differential.py)
found Chainfire getting wrong, one focused test each: the generated sequences need not hit
them on every run."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.services.kv import check_txn

from .conftest import Applier, Served


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
