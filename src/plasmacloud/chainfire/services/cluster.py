"""etcdserverpb.Cluster: the Raft group's membership in etcd's shape.

Member IDs are derived from node ids (stable on every node); the member name is the
node id. MemberAdd takes the new member's peer URL and finds its node id in the
cluster config (by IP or hostname and port), falling back to the URL's hostname.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.node import member_id, raft_error
from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.chainfire.services.base import Servicer, unary
from plasmacloud.raft.api import RaftError

_NODE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def peer_address(url: str) -> str:
    """``host:port`` of an http(s) peer URL; raises etcd's bad-URL error otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise errors.MEMBER_BAD_URLS from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise errors.MEMBER_BAD_URLS
    return f"{parts.hostname}:{port}"


class ClusterServicer(Servicer, rpc_pb2_grpc.ClusterServicer):
    service = "etcdserverpb.Cluster"

    async def _on_leader(self, method: str, request: Any) -> Any:
        """Run a membership change on the leader (the engine only changes it there)."""
        stub = rpc_pb2_grpc.ClusterStub(self.node.leader_channel())
        try:
            return await getattr(stub, method)(request, timeout=self.node.request_timeout)
        except grpc.aio.AioRpcError as exc:
            raise errors.EtcdError(exc.code(), exc.details() or "") from exc

    def _node_id_for(self, address: str) -> str:
        named = dict(self.node.identity.peer_names).get(address)
        if named is None and self.node.reload_identity():  # re-rendered since the start
            named = dict(self.node.identity.peer_names).get(address)
        if named is not None:
            return named
        host = address.rsplit(":", 1)[0]
        if _NODE_ID_RE.match(host) and not host.replace("-", "").isdigit():
            return host
        raise errors.EtcdError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"etcdserver: no node in the cluster config has peer address {address}; "
            "add the node to cluster.yaml and render every node's config first",
        )

    @unary
    async def MemberList(
        self, request: rpc_pb2.MemberListRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberListResponse:
        return rpc_pb2.MemberListResponse(header=self.node.header(), members=self.node.members())

    @unary
    async def MemberAdd(
        self, request: rpc_pb2.MemberAddRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberAddResponse:
        if request.isLearner:
            raise errors.NOT_CAPABLE
        if not self.node.raft.is_leader:
            return await self._on_leader("MemberAdd", request)  # type: ignore[no-any-return]
        if len(request.peerURLs) != 1:
            raise errors.MEMBER_BAD_URLS  # the engine knows one address per member
        address = peer_address(request.peerURLs[0])
        members = self.node.raft.status().members
        if any(m.address == address for m in members):
            raise errors.PEER_URL_EXISTS
        node_id = self._node_id_for(address)
        if any(m.node_id == node_id for m in members):
            raise errors.MEMBER_EXISTS
        try:
            await self.node.raft.add_member(node_id, address)
        except RaftError as exc:
            raise raft_error(exc) from exc
        added = rpc_pb2.Member(
            ID=member_id(node_id),
            name=node_id,
            peerURLs=list(request.peerURLs),
            clientURLs=self.node.client_urls(node_id),
        )
        return rpc_pb2.MemberAddResponse(
            header=self.node.header(), member=added, members=self.node.members()
        )

    @unary
    async def MemberRemove(
        self, request: rpc_pb2.MemberRemoveRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberRemoveResponse:
        if not self.node.raft.is_leader:
            return await self._on_leader("MemberRemove", request)  # type: ignore[no-any-return]
        members = self.node.raft.status().members
        node_id = next((m.node_id for m in members if member_id(m.node_id) == request.ID), None)
        if node_id is None:
            raise errors.MEMBER_NOT_FOUND
        try:
            await self.node.raft.remove_member(node_id)
        except RaftError as exc:
            raise raft_error(exc) from exc
        return rpc_pb2.MemberRemoveResponse(header=self.node.header(), members=self.node.members())

    @unary
    async def MemberUpdate(
        self, request: rpc_pb2.MemberUpdateRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberUpdateResponse:
        # peer addresses come from the cluster config; change them there and re-render
        raise errors.NOT_CAPABLE

    @unary
    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberPromoteResponse:
        # there are no learners: every member is a voter already
        if all(member_id(m.node_id) != request.ID for m in self.node.raft.status().members):
            raise errors.MEMBER_NOT_FOUND
        raise errors.EtcdError(
            grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: can only promote a learner member"
        )
