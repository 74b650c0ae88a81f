"""Growing and shrinking a running cluster: one node into or out of all three services.

Chainfire takes etcd's ``member add`` / ``member remove``, FlareDB rqlite's ``POST /join``
/ ``DELETE /remove``; IAM keeps its state in Chainfire's system keyspace, so a node that
is a Chainfire member serves IAM with it and one that is not has nothing to serve. Each
change is one single-server membership change per Raft group, made while the others
serve; the new member catches up from the leader's log or a snapshot.

Whoever knows where the nodes are (the lab, provisioning) renders every node's
``cluster-config.json`` for the new membership first: running members re-read it to
reach and name a new member (``NodeConfig.reloaded``), and a new node starts from its own
with ``bootstrap: false``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from plasmacloud.chainfire.client import ChainfireClient, EtcdError
from plasmacloud.chainfire.node import member_id
from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.cluster.control import ClusterError
from plasmacloud.cluster.probe import (
    ClusterView,
    client_target,
    describe,
    dial,
    probe_cluster,
    wait_cluster_ready,
)
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.common.config import NodeConfig
from plasmacloud.common.tls import client_context
from plasmacloud.flaredb.client import Client
from plasmacloud.flaredb.client import Error as FlareError

Progress = Callable[[str], None]
READY_TIMEOUT_S = 90.0
MOVE_LEADER_ATTEMPTS = 3


@dataclass(frozen=True)
class Change:
    """What one add or remove did."""

    node_id: str
    seconds: float  # from the first change until the cluster was ready again
    moved_leader_to: str | None = None  # the node led Chainfire; leadership went here first


def _config(target: ClusterTarget, node_id: str) -> NodeConfig:
    for cfg in target.configs:
        if cfg.node_id == node_id:
            return cfg
    raise ClusterError(f"{node_id} is not in the cluster's configs ({', '.join(target.node_ids)})")


async def members_ready(target: ClusterTarget, members: list[NodeConfig]) -> ClusterView:
    """The probe of ``members`` (the current Raft members, whatever the rendered configs
    list); ClusterError unless every one is healthy, lists exactly them and agrees on one
    leader: a membership change on a degraded cluster can cost it its quorum."""
    probed = await probe_cluster(members, target.services, target.tls)
    view = ClusterView(probed.nodes, expected_members=len(members))
    names = sorted(c.node_id for c in members)
    wrong = [n.node_id for n in view.nodes if n.members and n.members != names]
    if not view.ready or wrong:
        listed = f"; {', '.join(wrong)} list other members" if wrong else ""
        raise ClusterError(
            f"the members {', '.join(names)} are not healthy ({describe(view)}{listed}); "
            "fix that before changing the membership"
        )
    return view


def member_configs(node: NodeConfig) -> list[NodeConfig]:
    """Every member's config as far as one node's config tells (its peers' names,
    addresses and ports; the TLS files are this node's, which is all a probe needs)."""
    return [
        node.model_copy(
            update={
                "node_id": p.node_id,
                "hostname": p.hostname,
                "ip": p.ip,
                "ports": p.ports,
                "bind_address": None,
            }
        )
        for p in node.peers
    ]


def _endpoints(configs: list[NodeConfig]) -> list[str]:
    return [client_target(c) for c in configs]


async def _flaredb(
    target: ClusterTarget, via: list[NodeConfig], change: Callable[[Client], None]
) -> None:
    """Make a FlareDB membership change through the first of ``via`` that takes it."""
    ctx = client_context(target.tls) if target.tls.enabled else None
    problems = []
    for cfg in via:
        scheme = "https" if target.tls.enabled else "http"
        client = Client(f"{scheme}://{cfg.listen_host}:{cfg.ports.flaredb_http}", ctx, timeout=30)
        try:
            await asyncio.to_thread(change, client)
            return
        except FlareError as exc:
            problems.append(f"{cfg.node_id}: {exc}")
    raise ClusterError(f"FlareDB refused the change: {'; '.join(problems)}")


async def add_node(
    target: ClusterTarget,
    node_id: str,
    progress: Progress,
    *,
    start: bool = True,
    ready_timeout: float = READY_TIMEOUT_S,
) -> Change:
    """Add ``node_id`` (in ``target.configs``; its own config must say ``bootstrap:
    false`` or it forms a cluster of its own; every other config lists it too) to
    Chainfire and FlareDB: the node is started (``start``, with the target's node
    control; otherwise it must be running already), then added to Chainfire (etcd's
    member add) and joined to FlareDB (which it also asks for itself); returns once all
    serve it as one cluster. Unlike etcd's, a node started with bootstrap false waits to
    be added, so it starts first: the cluster never counts a member in its quorum that
    is not running yet."""
    new = _config(target, node_id)
    members = [c for c in target.configs if c.node_id != node_id]
    await members_ready(target, members)
    began = time.monotonic()
    if start:
        # started first, it waits to be added; added first, a cluster of one or two would
        # wait for it to commit the change (the new member counts in the quorum at once)
        if target.control is None:
            raise ClusterError(f"the {target.name} target cannot start {node_id}; boot it")
        progress(f"starting {node_id} (bootstrap: false: it waits to be added)")
        await asyncio.to_thread(target.control.start_node, node_id)
    peer_url = f"{'https' if target.tls.enabled else 'http'}://{new.hostname}:"
    peer_url += str(new.ports.chainfire_peer)
    progress(f"Chainfire: member add {node_id} ({peer_url})")
    async with ChainfireClient(_endpoints(members), target.tls, timeout=30) as client:
        try:
            await client.member_add(peer_url)
        except EtcdError as exc:
            raise ClusterError(f"Chainfire refused to add {node_id}: {exc}") from exc
    raft_addr = f"{new.hostname}:{new.ports.flaredb_raft}"
    progress(f"FlareDB: join {node_id} ({raft_addr})")
    await _flaredb(target, members, lambda c: c.join(node_id, raft_addr))
    progress(f"waiting until {len(target.configs)} members serve as one cluster")
    await wait_cluster_ready(
        target.configs, target.services, target.tls, ready_timeout, f"adding {node_id}"
    )
    return Change(node_id, time.monotonic() - began)


async def _leader_now(target: ClusterTarget, configs: list[NodeConfig]) -> str | None:
    """The member all of ``configs`` agree leads Chainfire (None if they do not agree)."""
    view = await probe_cluster(configs, target.services, target.tls)
    seen = {n.leader_id for n in view.nodes}
    if len(seen) != 1:
        return None
    lead = seen.pop()
    return next((c.node_id for c in target.configs if member_id(c.node_id) == lead), None)


async def _move_chainfire_leader(
    target: ClusterTarget, leader: NodeConfig, to: str, others: list[NodeConfig]
) -> str:
    """etcdctl move-leader (only the leader takes it), tried a few times: under load the
    target may not catch up with the leader's log within one request's time. Returns the
    member that leads afterwards: a try that timed out may still have handed leadership
    on (to ``to`` or, after an election, to another), which the next try only learns as
    "not leader", so after each failure ``others`` are asked who leads now."""
    request = rpc_pb2.MoveLeaderRequest(targetID=member_id(to))
    async with dial(client_target(leader), target.tls) as channel:
        for _ in range(MOVE_LEADER_ATTEMPTS):
            try:
                await rpc_pb2_grpc.MaintenanceStub(channel).MoveLeader(request, timeout=30)
                return to
            except grpc.aio.AioRpcError as exc:
                failure = exc.details()
            now = await _leader_now(target, others)
            if now is not None and now != leader.node_id:
                return now
    raise ClusterError(
        f"moving Chainfire's leadership to {to} ({MOVE_LEADER_ATTEMPTS} tries): {failure}"
    )


async def remove_node(
    target: ClusterTarget,
    node_id: str,
    progress: Progress,
    *,
    stop: bool = True,
    ready_timeout: float = READY_TIMEOUT_S,
) -> Change:
    """Take ``node_id`` out of Chainfire and FlareDB (moving Chainfire's leadership away
    first if it leads), then stop it (``stop``, with the target's node control; it stops
    its Chainfire and FlareDB itself once removed, as etcd's removed members do). The
    node may be dead already (replacing a lost machine): only the others must be
    healthy. ``target.configs`` may list the node or already not."""
    remaining = [c for c in target.configs if c.node_id != node_id]
    if not remaining:
        raise ClusterError(f"{node_id} is the last member; a cluster cannot remove it")
    # the members as the survivors list them (the node itself may be gone)
    view = await probe_cluster(remaining, target.services, target.tls)
    sick = [n.node_id for n in view.nodes if not n.healthy or n.error]
    if sick:
        raise ClusterError(
            f"{', '.join(sick)} not healthy ({describe(view)}); removing {node_id} now "
            "could cost the cluster its quorum"
        )
    listed = {m for n in view.nodes for m in n.members}
    if node_id not in listed:
        raise ClusterError(f"{node_id} is not a member (members: {', '.join(sorted(listed))})")
    began = time.monotonic()
    moved_to = None
    if member_id(node_id) in {n.leader_id for n in view.nodes}:  # as any member sees it
        # the most up-to-date follower takes over soonest (a just-added one may lag)
        to = max(view.nodes, key=lambda n: n.raft_index or 0).node_id  # ties: the first
        progress(f"Chainfire: {node_id} leads; moving leadership to {to}")
        try:
            moved_to = await _move_chainfire_leader(target, _config(target, node_id), to, remaining)
        except ClusterError as exc:
            # still safe: a leader that commits its own removal steps down, and the others
            # elect a new one (an election timeout instead of a round trip)
            progress(f"{exc}; removing {node_id} while it leads")
            moved_to = None
    progress(f"Chainfire: member remove {node_id}")
    async with ChainfireClient(_endpoints(remaining), target.tls, timeout=30) as client:
        try:
            await client.member_remove(member_id(node_id))
        except EtcdError as exc:
            raise ClusterError(f"Chainfire refused to remove {node_id}: {exc}") from exc
    progress(f"FlareDB: remove {node_id}")
    await _flaredb(target, remaining, lambda c: c.remove(node_id))
    if stop and target.control is not None:
        progress(f"stopping {node_id}")
        await asyncio.to_thread(target.control.stop_node, node_id)
    progress(f"waiting until the {len(remaining)} remaining members serve")
    survivors = [
        c.model_copy(update={"peers": [p for p in c.peers if p.node_id != node_id]})
        for c in remaining
    ]
    await wait_cluster_ready(
        survivors, target.services, target.tls, ready_timeout, f"removing {node_id}"
    )
    return Change(node_id, time.monotonic() - began, moved_to)
