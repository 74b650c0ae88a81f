"""The authorization hook: what an installed authorizer sees and how refusals look."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.auth import KeyRange, touched_ranges
from plasmacloud.chainfire.proto import rpc_pb2 as pb

from .conftest import Served

DENIED = errors.EtcdError(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")


class DenySecrets:
    """Refuses anything touching keys under ``secret/``; records every question."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, list[KeyRange]]] = []

    async def authorize(
        self, context: grpc.aio.ServicerContext, rpc: str, ranges: Sequence[KeyRange]
    ) -> None:
        self.asked.append((rpc, list(ranges)))
        if any(key.startswith(b"secret/") for key, _ in ranges):
            raise DENIED


def test_touched_ranges_of_a_nested_txn() -> None:
    txn = pb.TxnRequest(
        compare=[pb.Compare(key=b"c")],
        success=[
            pb.RequestOp(request_put=pb.PutRequest(key=b"p")),
            pb.RequestOp(
                request_txn=pb.TxnRequest(
                    failure=[
                        pb.RequestOp(
                            request_delete_range=pb.DeleteRangeRequest(key=b"d", range_end=b"e")
                        )
                    ]
                )
            ),
        ],
        failure=[pb.RequestOp(request_range=pb.RangeRequest(key=b"r", range_end=b"\0"))],
    )
    assert touched_ranges(txn) == [(b"c", b""), (b"p", b""), (b"d", b"e"), (b"r", b"\0")]
    assert touched_ranges(pb.MemberListRequest()) == []


async def test_authorizer_sees_requests_and_refusals_use_etcd_errors(served: Served) -> None:
    auth = DenySecrets()
    served.node.authorizer = auth
    await served.kv.Put(pb.PutRequest(key=b"open/a", value=b"1"))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await served.kv.Range(pb.RangeRequest(key=b"secret/", range_end=b"secret0"))
    assert (exc.value.code(), exc.value.details()) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "etcdserver: permission denied",
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await served.kv.Txn(
            pb.TxnRequest(success=[pb.RequestOp(request_put=pb.PutRequest(key=b"secret/x"))])
        )
    assert served.store.revision == 2  # the refused txn wrote nothing
    await served.cluster.MemberList(pb.MemberListRequest())
    assert auth.asked[0] == ("Put", [(b"open/a", b"")])
    assert auth.asked[-1] == ("MemberList", [])
    # a refused watcher is cancelled with the reason; the stream stays usable
    call = served.watch.Watch()
    await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"secret/k")))
    refused = await asyncio.wait_for(call.read(), 5)
    assert refused.canceled and refused.cancel_reason == "etcdserver: permission denied"
    await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"open/a")))
    assert (await asyncio.wait_for(call.read(), 5)).created
    call.cancel()
