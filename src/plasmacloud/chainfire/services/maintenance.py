"""etcdserverpb.Maintenance: Status, Hash/HashKV, Snapshot, Alarm, Defragment."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.node import ETCD_VERSION, member_id
from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.chainfire.services.base import Servicer, count, guard_stream, unary

SNAPSHOT_CHUNK = 32 * 1024  # etcd streams its snapshot in 32 KiB pieces too


def snapshot_blob(db: bytes) -> bytes:
    """The database followed by its SHA-256, the layout ``etcdctl snapshot save`` checks."""
    return db + hashlib.sha256(db).digest()


class MaintenanceServicer(Servicer, rpc_pb2_grpc.MaintenanceServicer):
    service = "etcdserverpb.Maintenance"

    @unary
    async def Status(
        self, request: rpc_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.StatusResponse:
        st = self.node.raft.status()
        size = self.node.store.db_size()
        return rpc_pb2.StatusResponse(
            header=self.node.header(),
            version=ETCD_VERSION,
            dbSize=size,
            leader=member_id(st.leader_id) if st.leader_id else 0,
            raftIndex=st.commit_index,
            raftTerm=st.term,
            raftAppliedIndex=st.applied_index,
            errors=[
                f"memberID:{a.memberID} alarm:{rpc_pb2.AlarmType.Name(a.alarm)} "
                for a in self.node.store.alarms()
            ],
            dbSizeInUse=size,
        )

    @unary
    async def Hash(
        self, request: rpc_pb2.HashRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.HashResponse:
        h, _, _ = self.node.store.hash_kv(0)
        return rpc_pb2.HashResponse(header=self.node.header(), hash=h)

    @unary
    async def HashKV(
        self, request: rpc_pb2.HashKVRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.HashKVResponse:
        h, compact, rev = self.node.store.hash_kv(request.revision)
        return rpc_pb2.HashKVResponse(
            header=self.node.header(rev), hash=h, compact_revision=compact
        )

    async def Snapshot(  # type: ignore[override]
        self, request: rpc_pb2.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        if not await guard_stream(self, context, "Snapshot"):
            return
        count(self.node, f"{self.service}/Snapshot")
        blob = snapshot_blob(self.node.store.client_backup_bytes())
        header = self.node.header()
        for start in range(0, len(blob), SNAPSHOT_CHUNK):
            chunk = blob[start : start + SNAPSHOT_CHUNK]
            yield rpc_pb2.SnapshotResponse(
                header=header, remaining_bytes=len(blob) - start - len(chunk), blob=chunk
            )

    @unary
    async def Alarm(
        self, request: rpc_pb2.AlarmRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.AlarmResponse:
        # etcd answers alarm requests (and Defragment) without a response header
        if request.action == rpc_pb2.AlarmRequest.GET:
            alarms = [
                a for a in self.node.store.alarms() if request.alarm in (rpc_pb2.NONE, a.alarm)
            ]
            return rpc_pb2.AlarmResponse(alarms=alarms)
        resp: rpc_pb2.AlarmResponse = await self.node.write(request)
        resp.ClearField("header")
        return resp

    @unary
    async def Defragment(
        self, request: rpc_pb2.DefragmentRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.DefragmentResponse:
        self.node.store.defragment()
        return rpc_pb2.DefragmentResponse()

    @unary
    async def MoveLeader(
        self, request: rpc_pb2.MoveLeaderRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MoveLeaderResponse:
        """Hand leadership to member ``targetID`` (etcdctl move-leader); only the leader
        takes it, as in etcd, which answers others "not leader"."""
        raft = self.node.raft
        if not raft.is_leader:
            raise errors.NOT_LEADER
        members = [m.node_id for m in raft.status().members]
        target = next((n for n in members if member_id(n) == request.targetID), None)
        if target is None:
            raise errors.BAD_LEADER_TRANSFEREE
        if target != raft.leader_id:
            leader = await raft.transfer_leadership(timeout=self.node.request_timeout, to=target)
            if leader != target:
                raise errors.LEADER_TRANSFER_TIMEOUT
        return rpc_pb2.MoveLeaderResponse(header=self.node.header())
