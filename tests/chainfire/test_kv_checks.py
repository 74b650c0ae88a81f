"""Request validation done before anything is proposed (etcd's v3rpc/key.go rules)."""

from __future__ import annotations

import pytest

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.mvcc import txn_writes
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.services.kv import check_txn


def put(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key))


def delete(key: bytes, end: bytes = b"") -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=end))


def get(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key))


def nested(success: list[pb.RequestOp], failure: list[pb.RequestOp] | None = None) -> pb.RequestOp:
    return pb.RequestOp(request_txn=pb.TxnRequest(success=success, failure=failure or []))


@pytest.mark.parametrize(
    "ops",
    [
        [put(b"a"), put(b"b"), get(b"a")],
        [put(b"a"), delete(b"b")],
        [nested([put(b"a")], [put(b"a")])],  # then/else are exclusive: fine
        [put(b"a"), nested([put(b"b")], [delete(b"c")])],
    ],
)
def test_allowed_txns(ops: list[pb.RequestOp]) -> None:
    check_txn(pb.TxnRequest(success=ops))


@pytest.mark.parametrize(
    "ops",
    [
        [put(b"a"), put(b"a")],
        [put(b"a"), delete(b"a")],
        [put(b"ab"), delete(b"a", b"b")],  # the put falls inside the deleted range
        [put(b"a"), nested([put(b"a")])],
        [delete(b"a"), nested([put(b"a")])],
        [nested([put(b"x")]), nested([put(b"x")])],
    ],
)
def test_duplicate_keys_are_refused(ops: list[pb.RequestOp]) -> None:
    with pytest.raises(errors.EtcdError) as exc:
        check_txn(pb.TxnRequest(success=ops))
    assert exc.value == errors.DUPLICATE_KEY


def test_nested_op_budget_and_empty_keys() -> None:
    big = [put(b"k%d" % i) for i in range(140)]
    # 60 + 1 ops here leave a nested txn 128 - 61 = 67 ops, as in etcd
    check_txn(pb.TxnRequest(success=[*big[:60], nested(big[60:127])]))
    with pytest.raises(errors.EtcdError) as exc:
        check_txn(pb.TxnRequest(success=[*big[:60], nested(big[60:128])]))
    assert exc.value == errors.TOO_MANY_OPS
    with pytest.raises(errors.EtcdError) as exc:
        check_txn(pb.TxnRequest(compare=[pb.Compare()]))
    assert exc.value == errors.EMPTY_KEY
    with pytest.raises(errors.EtcdError) as exc:
        check_txn(
            pb.TxnRequest(
                failure=[
                    pb.RequestOp(request_put=pb.PutRequest(ignore_lease=True, key=b"k", lease=5))
                ]
            )
        )
    assert exc.value == errors.LEASE_PROVIDED


def test_txn_writes() -> None:
    assert txn_writes(pb.TxnRequest(success=[get(b"a")])) == (False, False)
    assert txn_writes(pb.TxnRequest(failure=[delete(b"a")])) == (True, False)
    assert txn_writes(pb.TxnRequest(success=[nested([], [put(b"a")])])) == (True, True)
