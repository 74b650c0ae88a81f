"""Chainfire's part of the checklist: members, one agreed leader, and put/get/delete
through each node read back linearizably on every node. The etcd v3 API is the same
for the reference etcd, so these checks run unchanged against it."""

from __future__ import annotations

import secrets

import grpc

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.cluster.probe import ClusterView, client_target, dial
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.validate.crud import CrudOps, crud_round
from plasmacloud.validate.results import RPC_TIMEOUT_S, NodeResult


async def check_members(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """Chainfire lists every configured node as a member, on every node."""
    want = sorted(p.node_id for p in t.configs[0].peers)
    return [
        NodeResult(
            v.node_id,
            v.error is None and v.members == want,
            v.error or f"{len(v.members)} members: {', '.join(v.members)}",
        )
        for v in view.nodes
    ]


async def check_leader(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """One leader, and every node names the same one."""
    ids = {v.member_id: v.node_id for v in view.nodes if v.member_id}
    agreed = view.leader_node
    out = []
    for v in view.nodes:
        says = ids.get(v.leader_id or 0, f"{v.leader_id:x}" if v.leader_id else "none")
        ok = agreed is not None and v.error is None
        evidence = v.error or f"leader {says}, term {v.raft_term}"
        out.append(NodeResult(v.node_id, ok, evidence if ok else f"{evidence} (not agreed)"))
    return out


async def put(cfg: NodeConfig, tls: TLSConfig, key: bytes, value: bytes) -> int:
    """Put through ``cfg``'s node; the revision it got."""
    async with dial(client_target(cfg), tls) as channel:
        resp = await rpc_pb2_grpc.KVStub(channel).Put(
            rpc_pb2.PutRequest(key=key, value=value), timeout=RPC_TIMEOUT_S
        )
    return int(resp.header.revision)


async def get(cfg: NodeConfig, tls: TLSConfig, key: bytes) -> bytes | None:
    """Linearizable get (etcd's default Range) on ``cfg``'s node; None when absent."""
    async with dial(client_target(cfg), tls) as channel:
        resp = await rpc_pb2_grpc.KVStub(channel).Range(
            rpc_pb2.RangeRequest(key=key), timeout=RPC_TIMEOUT_S
        )
    return bytes(resp.kvs[0].value) if resp.kvs else None


async def delete(cfg: NodeConfig, tls: TLSConfig, key: bytes) -> int:
    """Delete through ``cfg``'s node; how many keys went."""
    async with dial(client_target(cfg), tls) as channel:
        resp = await rpc_pb2_grpc.KVStub(channel).DeleteRange(
            rpc_pb2.DeleteRangeRequest(key=key), timeout=RPC_TIMEOUT_S
        )
    return int(resp.deleted)


def _rpc_error(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


async def _crud_one(t: ClusterTarget, cfg: NodeConfig) -> NodeResult:
    key = f"/plasmacloud/validate/{cfg.node_id}/{secrets.token_hex(4)}".encode()
    value = secrets.token_bytes(16)

    async def write() -> str:
        return f"put rev {await put(cfg, t.tls, key, value)}"

    ops = CrudOps[bytes, grpc.aio.AioRpcError](
        write=write,
        read=lambda node: get(node, t.tls, key),
        delete=lambda: delete(cfg, t.tls, key),
        failure=grpc.aio.AioRpcError,
        describe=_rpc_error,
        describe_read=_rpc_error,
    )
    return await crud_round(t, cfg, value, ops)


async def check_crud(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """Put through each node, read back on every node, delete, and see it gone everywhere."""
    return [await _crud_one(t, cfg) for cfg in t.configs]
