"""v3electionpb.Election: leader election held by a lease, like clientv3's concurrency."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.proto import rpc_pb2, v3election_pb2, v3election_pb2_grpc
from plasmacloud.chainfire.recipes import (
    acquire,
    created_at,
    first_contender,
    set_value,
    watch_key,
)
from plasmacloud.chainfire.services.base import (
    Servicer,
    as_client_errors,
    count,
    guard_stream,
    unary,
)
from plasmacloud.common.keyrange import prefix_end

NOT_LEADER = errors.EtcdError(grpc.StatusCode.UNKNOWN, "election: not leader")
NO_LEADER = errors.EtcdError(grpc.StatusCode.UNKNOWN, "election: no leader")
MISSING_LEADER = errors.EtcdError(grpc.StatusCode.UNKNOWN, '"leader" field must be provided')


class ElectionServicer(Servicer, v3election_pb2_grpc.ElectionServicer):
    service = "v3electionpb.Election"

    @unary
    async def Campaign(
        self, request: v3election_pb2.CampaignRequest, context: grpc.aio.ServicerContext
    ) -> v3election_pb2.CampaignResponse:
        # an empty name is etcd's too: the election lives under "/"
        with as_client_errors():
            # a re-campaign by the same lease keeps its key and takes the new value
            won = await acquire(self.node, request.name, request.lease, request.value, update=True)
        leader = v3election_pb2.LeaderKey(
            name=request.name, key=won.key, rev=won.rev, lease=request.lease
        )
        # as of the campaign's own txn, like clientv3's Campaign
        return v3election_pb2.CampaignResponse(header=won.header, leader=leader)

    @unary
    async def Proclaim(
        self, request: v3election_pb2.ProclaimRequest, context: grpc.aio.ServicerContext
    ) -> v3election_pb2.ProclaimResponse:
        if not request.HasField("leader"):
            raise MISSING_LEADER
        leader = request.leader
        with as_client_errors():
            resp = await set_value(self.node, leader.key, leader.rev, leader.lease, request.value)
        if not resp.succeeded:
            raise NOT_LEADER
        return v3election_pb2.ProclaimResponse(header=resp.header)

    @unary
    async def Leader(
        self, request: v3election_pb2.LeaderRequest, context: grpc.aio.ServicerContext
    ) -> v3election_pb2.LeaderResponse:
        await self.node.barrier()
        kv = first_contender(self.node, request.name)
        if kv is None:
            raise NO_LEADER
        return v3election_pb2.LeaderResponse(header=self.node.header(), kv=kv)

    async def Observe(  # type: ignore[override]
        self, request: v3election_pb2.LeaderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """Every leader in turn, and every new value a leader proclaims."""
        if not await guard_stream(self, context, "Observe"):
            return
        count(self.node, f"{self.service}/Observe")
        prefix = request.name + b"/"
        await self.node.barrier()
        while True:
            rev = self.node.store.revision
            kv = first_contender(self.node, request.name)
            if kv is None:
                # nobody campaigns yet: wait for the first contender
                async with watch_key(self.node, prefix, prefix_end(prefix), rev + 1) as q:
                    while True:
                        got = await q.get()
                        if got is None or got.is_put:
                            break
                continue
            yield v3election_pb2.LeaderResponse(header=self.node.header(), kv=kv)
            async with watch_key(self.node, kv.key, b"", rev + 1) as q:
                while True:
                    got = await q.get()
                    if got is None or not got.is_put:
                        break  # leadership moved on (or history was lost): look again
                    yield v3election_pb2.LeaderResponse(header=self.node.header(), kv=got.event.kv)

    @unary
    async def Resign(
        self, request: v3election_pb2.ResignRequest, context: grpc.aio.ServicerContext
    ) -> v3election_pb2.ResignResponse:
        if not request.HasField("leader"):
            raise MISSING_LEADER
        txn = rpc_pb2.TxnRequest(
            compare=[created_at(request.leader.key, request.leader.rev)],
            success=[
                rpc_pb2.RequestOp(
                    request_delete_range=rpc_pb2.DeleteRangeRequest(key=request.leader.key)
                )
            ],
        )
        with as_client_errors():
            resp: rpc_pb2.TxnResponse = await self.node.write(txn)
        return v3election_pb2.ResignResponse(header=resp.header)
