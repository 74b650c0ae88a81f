"""v3lockpb.Lock: distributed locks held by a lease (see ``recipes`` for fencing tokens)."""

from __future__ import annotations

import grpc

from plasmacloud.chainfire.proto import rpc_pb2, v3lock_pb2, v3lock_pb2_grpc
from plasmacloud.chainfire.recipes import acquire
from plasmacloud.chainfire.services.base import Servicer, as_client_errors, unary
from plasmacloud.chainfire.services.kv import check_delete


class LockServicer(Servicer, v3lock_pb2_grpc.LockServicer):
    service = "v3lockpb.Lock"

    @unary
    async def Lock(
        self, request: v3lock_pb2.LockRequest, context: grpc.aio.ServicerContext
    ) -> v3lock_pb2.LockResponse:
        # an empty name is etcd's too: the lock lives under "/"
        with as_client_errors():
            held = await acquire(self.node, request.name, request.lease)
        return v3lock_pb2.LockResponse(header=self.node.header(), key=held.key)

    @unary
    async def Unlock(
        self, request: v3lock_pb2.UnlockRequest, context: grpc.aio.ServicerContext
    ) -> v3lock_pb2.UnlockResponse:
        delete = rpc_pb2.DeleteRangeRequest(key=request.key)
        with as_client_errors():
            check_delete(delete)
            resp = await self.node.write(delete)
        return v3lock_pb2.UnlockResponse(header=resp.header)
