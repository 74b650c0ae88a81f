"""etcdserverpb.Lease: Grant, Revoke, KeepAlive (stream), TimeToLive, Leases.

Grants, revokes and keep-alives are replicated, so every member refreshes its lease
timers and any member can answer TimeToLive; only the leader revokes on expiry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.chainfire.services.base import Servicer, count, guard_stream, unary


class LeaseServicer(Servicer, rpc_pb2_grpc.LeaseServicer):
    service = "etcdserverpb.Lease"

    @unary
    async def LeaseGrant(
        self, request: rpc_pb2.LeaseGrantRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.LeaseGrantResponse:
        resp: rpc_pb2.LeaseGrantResponse = await self.node.write(request, grows=True)
        return resp

    @unary
    async def LeaseRevoke(
        self, request: rpc_pb2.LeaseRevokeRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.LeaseRevokeResponse:
        resp: rpc_pb2.LeaseRevokeResponse = await self.node.write(request)
        return resp

    async def LeaseKeepAlive(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        method = f"{self.service}/LeaseKeepAlive"
        if not await guard_stream(self, context, "LeaseKeepAlive"):
            return
        async for req in request_iterator:
            try:
                resp: rpc_pb2.LeaseKeepAliveResponse = await self.node.write(req)
            except errors.EtcdError as exc:
                if exc != errors.LEASE_NOT_FOUND:
                    count(self.node, method, exc.code.name)
                    await context.abort(exc.code, exc.message)
                # etcd answers an unknown lease with TTL 0 rather than an error
                resp = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=0)
            self.node.fill(resp.header)
            if not resp.header.revision:
                resp.header.revision = self.node.store.revision
            count(self.node, method)
            yield resp

    @unary
    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        await self.node.barrier()
        store = self.node.store
        granted = store.leases().get(request.ID)
        if granted is None:
            # etcd reports an unknown lease as TTL -1, not as an error
            return rpc_pb2.LeaseTimeToLiveResponse(header=self.node.header(), ID=request.ID, TTL=-1)
        resp = rpc_pb2.LeaseTimeToLiveResponse(
            header=self.node.header(),
            ID=request.ID,
            TTL=store.timers.remaining(request.ID),
            grantedTTL=granted,
        )
        if request.keys:
            resp.keys.extend(store.lease_keys(request.ID))
        return resp

    @unary
    async def LeaseLeases(
        self, request: rpc_pb2.LeaseLeasesRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.LeaseLeasesResponse:
        await self.node.barrier()
        leases = sorted(self.node.store.leases())
        return rpc_pb2.LeaseLeasesResponse(
            header=self.node.header(), leases=[rpc_pb2.LeaseStatus(ID=i) for i in leases]
        )
