"""The cluster checklist (the seed's S6): each check returns one result per node, with evidence.

A check is an async function of a :class:`Target` returning :class:`NodeResult`\\ s; the
list :data:`CHECKS` is the checklist. Later checks (FlareDB, IAM, persistence across a
restart, Prometheus scraping) are added by appending to it.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import grpc

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.common.tls import client_context
from plasmacloud.lab.probe import ClusterView, client_target, dial, http_get, probe_cluster
from plasmacloud.lab.services import ServiceSpec

RPC_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class NodeResult:
    """One check on one node: pass/fail and what was seen."""

    node_id: str
    ok: bool
    evidence: str


@dataclass(frozen=True)
class CheckResult:
    """One check across every node."""

    check_id: str
    title: str
    results: list[NodeResult]

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)


@dataclass(frozen=True)
class Target:
    """The cluster under validation: node configs, how to dial it, what runs on it."""

    configs: list[NodeConfig]
    tls: TLSConfig
    services: tuple[ServiceSpec, ...]
    view: ClusterView  # one probe shared by the checks that read members/leader/health

    @property
    def ssl_ctx(self) -> ssl.SSLContext | None:
        return client_context(self.tls) if self.tls.enabled else None


CheckFn = Callable[[Target], Awaitable[list[NodeResult]]]


async def check_health(t: Target) -> list[NodeResult]:
    """Every service's health endpoint answers healthy on every node."""
    out = []
    for view in t.view.nodes:
        bad = {s: d for s, (ok, d) in view.health.items() if not ok}
        detail = "; ".join(f"{s}: {d}" for s, d in (bad or view.health_summary()).items())
        out.append(NodeResult(view.node_id, bool(view.health) and not bad, detail))
    return out


async def check_members(t: Target) -> list[NodeResult]:
    """Chainfire lists every configured node as a member, on every node."""
    want = sorted(p.node_id for p in t.configs[0].peers)
    return [
        NodeResult(
            v.node_id,
            v.error is None and v.members == want,
            v.error or f"{len(v.members)} members: {', '.join(v.members)}",
        )
        for v in t.view.nodes
    ]


async def check_leader(t: Target) -> list[NodeResult]:
    """One leader, and every node names the same one."""
    ids = {v.member_id: v.node_id for v in t.view.nodes if v.member_id}
    agreed = t.view.leader_node
    out = []
    for v in t.view.nodes:
        says = ids.get(v.leader_id or 0, f"{v.leader_id:x}" if v.leader_id else "none")
        ok = agreed is not None and v.error is None
        evidence = v.error or f"leader {says}, term {v.raft_term}"
        out.append(NodeResult(v.node_id, ok, evidence if ok else f"{evidence} (not agreed)"))
    return out


async def _crud_one(cfg: NodeConfig, tls: TLSConfig) -> NodeResult:
    key = f"/plasmacloud/validate/{cfg.node_id}/{secrets.token_hex(4)}".encode()
    value = secrets.token_bytes(16)
    try:
        async with dial(client_target(cfg), tls) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            put = await kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=RPC_TIMEOUT_S)
            got = await kv.Range(rpc_pb2.RangeRequest(key=key), timeout=RPC_TIMEOUT_S)
            deleted = await kv.DeleteRange(
                rpc_pb2.DeleteRangeRequest(key=key), timeout=RPC_TIMEOUT_S
            )
            gone = await kv.Range(rpc_pb2.RangeRequest(key=key), timeout=RPC_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        return NodeResult(cfg.node_id, False, f"{exc.code().name}: {exc.details()}")
    read_back = [kv.value for kv in got.kvs]
    ok = read_back == [value] and deleted.deleted == 1 and gone.count == 0
    evidence = (
        f"put rev {put.header.revision}, read {'same' if read_back == [value] else read_back}, "
        f"deleted {deleted.deleted}, after delete {gone.count} left"
    )
    return NodeResult(cfg.node_id, ok, evidence)


async def check_crud(t: Target) -> list[NodeResult]:
    """Put, linearizable get, delete and get-again through each node's client port."""
    return [await _crud_one(cfg, t.tls) for cfg in t.configs]


async def check_metrics(t: Target) -> list[NodeResult]:
    """Every service's Prometheus endpoint answers with samples."""
    out = []
    for cfg in t.configs:
        seen, ok = [], True
        for svc in t.services:
            if svc.metrics_url is None:
                continue
            try:
                status, body = await http_get(svc.metrics_url(cfg), t.ssl_ctx)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                seen.append(f"{svc.name}: {type(exc).__name__} {exc}")
                ok = False
                continue
            samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
            ok = ok and status == 200 and samples > 0
            seen.append(f"{svc.name}: HTTP {status}, {samples} samples")
        out.append(NodeResult(cfg.node_id, ok and bool(seen), "; ".join(seen) or "no endpoint"))
    return out


CHECKS: list[tuple[str, str, CheckFn]] = [
    ("health", "services report healthy", check_health),
    ("chainfire.members", "Chainfire lists every node as a member", check_members),
    ("chainfire.leader", "one Chainfire leader, agreed by all", check_leader),
    ("chainfire.crud", "Chainfire put/get/delete through each node", check_crud),
    ("metrics", "Prometheus endpoints answer", check_metrics),
]


async def run_checks(
    configs: list[NodeConfig],
    tls: TLSConfig,
    services: tuple[ServiceSpec, ...],
    checks: list[tuple[str, str, CheckFn]] = CHECKS,
) -> list[CheckResult]:
    """Probe the cluster once, then run every check in order."""
    target = Target(configs, tls, services, await probe_cluster(configs, services, tls))
    return [CheckResult(cid, title, await fn(target)) for cid, title, fn in checks]
