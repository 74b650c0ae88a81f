"""Ask a running cluster how it is: health URLs and the etcd-v3 view (members, leader) per
node, and wait until it is ready.

The etcd v3 Maintenance/Cluster RPCs are the same for Chainfire and a reference etcd,
so one probe serves the lab, the validation, chaos runs and the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.cluster.control import ClusterError
from plasmacloud.cluster.services import Service
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.common.tls import client_context, grpc_pem_material

# A node's first call with a certificate asks IAM who its CN is and what that principal
# may do (two HTTPS lookups, then cached); on emulated (TCG) VMs that alone took over 2 s.
PROBE_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 90.0
POLL_S = 0.5


def dial(target: str, tls: TLSConfig) -> grpc.aio.Channel:
    """An asyncio gRPC channel to ``host:port``, mutual TLS when ``tls.enabled``."""
    if not tls.enabled:
        return grpc.aio.insecure_channel(target)
    ca, cert, key = grpc_pem_material(tls)
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.aio.secure_channel(target, creds)


def client_target(cfg: NodeConfig) -> str:
    """``host:port`` of a node's Chainfire (etcd v3) client port."""
    return f"{cfg.listen_host}:{cfg.ports.chainfire_client}"


async def http_get(url: str, ssl_ctx: ssl.SSLContext | None) -> tuple[int, str]:
    """GET ``url`` (client certificate from ``ssl_ctx`` for https); (status, body)."""
    tls: ssl.SSLContext | bool = ssl_ctx if ssl_ctx and url.startswith("https") else True
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, ssl=tls) as resp,
    ):
        return resp.status, await resp.text()


async def check_health(url: str, ssl_ctx: ssl.SSLContext | None) -> tuple[bool, str]:
    """GET ``url``: healthy on 200 and, for etcd-style JSON, ``"health": "true"``."""
    try:
        status, body = await http_get(url, ssl_ctx)
    except aiohttp.ClientConnectorError as exc:
        return False, f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, f"{type(exc).__name__}: {exc}".strip(": ")
    if status != 200:
        return False, f"HTTP {status}: {body[:200].strip()}"
    try:
        doc = json.loads(body)
    except ValueError:
        return True, body[:200].strip()
    if isinstance(doc, dict) and "health" in doc and str(doc["health"]).lower() != "true":
        return False, body[:200].strip()
    return True, body[:200].strip()


@dataclass(frozen=True)
class NodeView:
    """One node as it answered the probe."""

    node_id: str
    health: dict[str, tuple[bool, str]] = field(default_factory=dict)  # service -> (ok, detail)
    member_id: int | None = None
    leader_id: int | None = None
    raft_term: int | None = None
    raft_index: int | None = None  # the commit index
    raft_applied_index: int | None = None
    db_size: int | None = None  # bytes
    alarms: list[str] = field(default_factory=list)  # Status.errors: the raised alarms
    members: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return bool(self.health) and all(ok for ok, _ in self.health.values())

    def health_summary(self) -> dict[str, str]:
        """service -> what its health endpoint said."""
        return {s: d for s, (_ok, d) in self.health.items()}

    def as_json(self) -> dict[str, Any]:
        """What ``plasma lab status --json`` shows of the node's answer."""
        return {
            "health": {s: {"ok": ok, "detail": d} for s, (ok, d) in self.health.items()},
            "members": self.members,
            "leader": self.leader_id,
            "member_id": self.member_id,
            "raft_term": self.raft_term,
            "raft_index": self.raft_index,
            "raft_applied_index": self.raft_applied_index,
            "db_size": self.db_size,
            "alarms": self.alarms,
            "error": self.error,
        }


@dataclass(frozen=True)
class ClusterView:
    """Every node's answer, and whether they add up to a working cluster."""

    nodes: list[NodeView]
    # members every node must list (the whole cluster, also when only some are probed)
    expected_members: int

    @property
    def leader_id(self) -> int | None:
        """The leader every node agrees on (``None`` if any disagrees or knows none)."""
        leaders = {n.leader_id for n in self.nodes}
        if len(leaders) != 1:
            return None
        (leader,) = leaders
        return leader or None

    @property
    def leader_node(self) -> str | None:
        """Node id of the agreed leader."""
        lid = self.leader_id
        return next((n.node_id for n in self.nodes if lid and n.member_id == lid), None)

    @property
    def ready(self) -> bool:
        """Every probed node healthy, sees every member, and all agree on one leader."""
        n = self.expected_members
        return self.leader_node is not None and all(
            v.healthy and len(v.members) == n and v.error is None for v in self.nodes
        )


async def probe_node(cfg: NodeConfig, services: tuple[Service, ...], tls: TLSConfig) -> NodeView:
    """Health of each service plus Status and MemberList from the node's client port."""
    ssl_ctx = client_context(tls) if tls.enabled else None
    health = {s.name: await check_health(s.health_url(cfg), ssl_ctx) for s in services}
    try:
        async with dial(client_target(cfg), tls) as channel:
            status = await rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=PROBE_TIMEOUT_S
            )
            members = await rpc_pb2_grpc.ClusterStub(channel).MemberList(
                rpc_pb2.MemberListRequest(), timeout=PROBE_TIMEOUT_S
            )
    except grpc.aio.AioRpcError as exc:
        return NodeView(cfg.node_id, health, error=f"{exc.code().name}: {exc.details()}")
    return NodeView(
        cfg.node_id,
        health,
        member_id=status.header.member_id,
        leader_id=status.leader,
        raft_term=status.raftTerm,
        raft_index=status.raftIndex,
        raft_applied_index=status.raftAppliedIndex,
        db_size=status.dbSize,
        alarms=list(status.errors),
        members=sorted(m.name for m in members.members),
    )


async def probe_cluster(
    configs: list[NodeConfig], services: tuple[Service, ...], tls: TLSConfig
) -> ClusterView:
    """Probe the given nodes concurrently (every config lists the whole cluster as peers)."""
    views = await asyncio.gather(*(probe_node(c, services, tls) for c in configs))
    return ClusterView(list(views), expected_members=len(configs[0].peers))


def describe(view: ClusterView) -> str:
    """One line saying what is still wrong with a cluster view."""
    problems = []
    for n in view.nodes:
        bad = [f"{s} {d}" for s, (ok, d) in n.health.items() if not ok]
        if bad:
            problems.append(f"{n.node_id}: unhealthy ({'; '.join(bad)})")
        if n.error:
            problems.append(f"{n.node_id}: {n.error}")
        elif len(n.members) != view.expected_members:
            problems.append(f"{n.node_id}: sees {len(n.members)} members")
    if view.leader_node is None:
        leaders = {n.node_id: n.leader_id for n in view.nodes}
        problems.append(f"no agreed leader ({leaders})")
    return "; ".join(problems) or "ready"


async def wait_cluster_ready(
    configs: list[NodeConfig],
    services: tuple[Service, ...],
    tls: TLSConfig,
    timeout: float = READY_TIMEOUT_S,
    when: str = "",
) -> ClusterView:
    """Poll the nodes until every one is healthy and all agree on one leader; ClusterError
    saying what is still wrong after ``timeout`` seconds (``when``: e.g. "after the restart")."""
    deadline = time.monotonic() + timeout
    while not (view := await probe_cluster(configs, services, tls)).ready:
        if time.monotonic() > deadline:
            after = f" {when}" if when else ""
            raise ClusterError(f"not ready {timeout:.0f}s{after}: {describe(view)}")
        await asyncio.sleep(POLL_S)
    return view
