"""v3lockpb.Lock: distributed locks held by a lease (see ``recipes`` for fencing tokens)."""

from __future__ import annotations

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.proto import rpc_pb2, v3lock_pb2, v3lock_pb2_grpc
from plasmacloud.chainfire.recipes import acquire
from plasmacloud.chainfire.services.base import Servicer, unary


class LockServicer(Servicer, v3lock_pb2_grpc.LockServicer):
    service = "v3lockpb.Lock"

    @unary
    async def Lock(
        self, request: v3lock_pb2.LockRequest, context: grpc.aio.ServicerContext
    ) -> v3lock_pb2.LockResponse:
        if not request.name:
            raise errors.EMPTY_KEY
        key, _ = await acquire(self.node, request.name, request.lease)
        return v3lock_pb2.LockResponse(header=self.node.header(), key=key)

    @unary
    async def Unlock(
        self, request: v3lock_pb2.UnlockRequest, context: grpc.aio.ServicerContext
    ) -> v3lock_pb2.UnlockResponse:
        if not request.key:
            raise errors.EMPTY_KEY
        resp = await self.node.write(rpc_pb2.DeleteRangeRequest(key=request.key))
        return v3lock_pb2.UnlockResponse(header=resp.header)
