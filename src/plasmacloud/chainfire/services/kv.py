"""etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact.

Requests are validated here exactly as etcd's ``v3rpc/key.go`` does before anything is
proposed; writes are replicated, reads are served locally after a ReadIndex barrier
unless the client asked for a serializable read.
"""

from __future__ import annotations

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.mvcc import txn_writes
from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.chainfire.services.base import Servicer, unary

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


def check_range(r: rpc_pb2.RangeRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY


def check_put(r: rpc_pb2.PutRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY
    if r.ignore_value and r.value:
        raise errors.VALUE_PROVIDED
    if r.ignore_lease and r.lease:
        raise errors.LEASE_PROVIDED


def check_delete(r: rpc_pb2.DeleteRangeRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY


def check_txn(r: rpc_pb2.TxnRequest, max_ops: int = MAX_TXN_OPS) -> None:
    """etcd's checkTxnRequest plus its duplicate-key check (checkIntervals)."""
    _check_txn_ops(r, max_ops)
    _intervals(list(r.success))
    _intervals(list(r.failure))


def _check_txn_ops(r: rpc_pb2.TxnRequest, max_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_ops:
        raise errors.TOO_MANY_OPS
    if any(not c.key for c in r.compare):
        raise errors.EMPTY_KEY
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range":
            check_range(op.request_range)
        elif kind == "request_put":
            check_put(op.request_put)
        elif kind == "request_delete_range":
            check_delete(op.request_delete_range)
        elif kind == "request_txn":
            _check_txn_ops(op.request_txn, max_ops - opc)
        else:
            raise errors.KEY_NOT_FOUND  # an empty op, as etcd reports it


Interval = tuple[bytes, bytes]


def _hits(dels: list[Interval], key: bytes) -> bool:
    """Whether a delete of this branch covers ``key``, as etcd's checkIntervals sees it:
    a plain byte interval, so a ``>= key`` delete (range_end ``\\0``) covers nothing."""
    return any(key == start if not end else start <= key < end for start, end in dels)


def _intervals(reqs: list[rpc_pb2.RequestOp]) -> tuple[set[bytes], list[Interval]]:
    """Puts and deletes of one branch; a key put twice or put and deleted is an error."""
    dels: list[Interval] = [
        (op.request_delete_range.key, op.request_delete_range.range_end)
        for op in reqs
        if op.WhichOneof("request") == "request_delete_range"
    ]
    puts: set[bytes] = set()
    for op in reqs:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _intervals(list(op.request_txn.success))
        puts_else, dels_else = _intervals(list(op.request_txn.failure))
        for k in puts_then:
            if k in puts or _hits(dels, k):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        for k in puts_else:
            # then/else are exclusive, so the same key in both is fine
            if (k in puts and k not in puts_then) or _hits(dels, k):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in reqs:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or _hits(dels, k):
            raise errors.DUPLICATE_KEY
        puts.add(k)
    return puts, dels


def txn_serializable(r: rpc_pb2.TxnRequest) -> bool:
    """True if every range in a read-only txn asked for a serializable read (etcd's rule)."""
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range" and not op.request_range.serializable:
            return False
        if kind == "request_txn" and not txn_serializable(op.request_txn):
            return False
    return True


class KVServicer(Servicer, rpc_pb2_grpc.KVServicer):
    service = "etcdserverpb.KV"

    @unary
    async def Range(
        self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.RangeResponse:
        check_range(request)
        if not request.serializable:
            await self.node.barrier()
        resp = self.node.store.range(request)
        self.node.fill(resp.header)
        return resp

    @unary
    async def Put(
        self, request: rpc_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.PutResponse:
        check_put(request)
        resp: rpc_pb2.PutResponse = await self.node.write(request, grows=True)
        return resp

    @unary
    async def DeleteRange(
        self, request: rpc_pb2.DeleteRangeRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.DeleteRangeResponse:
        check_delete(request)
        resp: rpc_pb2.DeleteRangeResponse = await self.node.write(request)
        return resp

    @unary
    async def Txn(
        self, request: rpc_pb2.TxnRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.TxnResponse:
        check_txn(request)
        writes, puts = txn_writes(request)
        if writes:
            resp: rpc_pb2.TxnResponse = await self.node.write(request, grows=puts)
        else:
            if not txn_serializable(request):
                await self.node.barrier()
            resp = self.node.store.read_txn(request)
            self.node.fill(resp.header)  # only the outer header, as etcd fills it
        return resp

    @unary
    async def Compact(
        self, request: rpc_pb2.CompactionRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.CompactionResponse:
        resp: rpc_pb2.CompactionResponse = await self.node.write(request)
        return resp
