"""Quorum-loss recovery: a new one-member cluster from the survivor's data, for Chainfire
and FlareDB (IAM keeps its records in Chainfire's system keyspace and comes back with it).

With a majority of the members gone for good, Raft can never commit again: every write
and every configuration change (so also adding a replacement) waits for a quorum that no
longer exists. etcd's answer is ``--force-new-cluster``, rqlite's is a ``peers.json`` in
the survivor's Raft directory: restart the survivor with its data but with itself as the
only member. Here :func:`plasmacloud.raft.force.force_new_cluster` does that to each Raft
group of the stopped survivor; its docstring says why this is an unsafe override and what
it costs. The guard against running it by mistake: it is refused while the survivor and
the members that still answer make a majority (then the cluster can heal itself), unless
forced; and refused on a survivor whose services still run.

Two ways to run it: :func:`recover_node` on the survivor's machine, services stopped, with
its ``cluster-config.json`` (a real cluster; the operator restarts the services); and
:func:`recover_cluster` for a target with node control whose data directories are on this
machine (a process or netns lab): stop, rewrite, start, and wait until the survivor alone
serves. Growing back to three is adding members to the one-member cluster.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from plasmacloud.cluster.control import ClusterError
from plasmacloud.cluster.probe import POLL_S, NodeView, probe_node
from plasmacloud.cluster.services import CHAINFIRE, FLAREDB, Service
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.common.config import NodeConfig, PeerConfig, ServicePorts, TLSConfig
from plasmacloud.raft.force import ForcedMembership, ForceNewClusterError, force_new_cluster
from plasmacloud.raft.nodeconfig import raft_dir

# the services with a Raft group of their own (IAM has none: its records are Chainfire's)
RAFT_SERVICES = (CHAINFIRE.name, FLAREDB.name)
CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Recovered:
    survivor: str
    groups: dict[str, ForcedMembership]  # service -> its membership rewrite
    reachable: list[str]  # other members that still answered (non-empty only when forced)
    seconds: float  # from stopping the survivor until it served alone (0 for recover_node)


def answers(host: str, ports: ServicePorts) -> bool:
    """True if a service of the node at ``host`` accepts a connection (Chainfire's client
    port or FlareDB's HTTP port): the node is up, whatever it would answer."""
    for port in (ports.chainfire_client, ports.flaredb_http):
        try:
            with socket.create_connection((host, port), CONNECT_TIMEOUT_S):
                return True
        except OSError:
            continue
    return False


async def check_quorum_lost(peers: list[PeerConfig], survivor: str, force: bool) -> list[str]:
    """The other members that still answer; ClusterError if they and the survivor make a
    majority of the cluster (unless ``force``): then no quorum is lost, or it may come back."""
    others = [p for p in peers if p.node_id != survivor]
    up = await asyncio.gather(*(asyncio.to_thread(answers, str(p.ip), p.ports) for p in others))
    reachable = [p.node_id for p, ok in zip(others, up, strict=True) if ok]
    quorum = len(peers) // 2 + 1
    if len(reachable) + 1 >= quorum and not force:
        raise ClusterError(
            f"{survivor} and {', '.join(reachable)} answer: {len(reachable) + 1} of "
            f"{len(peers)} members, a quorum. Recovery would throw away their part of the "
            "cluster; bring the others back instead, or pass --force if they are gone for good"
        )
    return reachable


def _survivor(configs: list[NodeConfig], survivor: str) -> NodeConfig:
    for c in configs:
        if c.node_id == survivor:
            return c
    names = ", ".join(c.node_id for c in configs)
    raise ClusterError(f"no member {survivor!r} in this cluster (members: {names})")


def rewrite_node(cfg: NodeConfig) -> dict[str, ForcedMembership]:
    """Make the stopped node the only member of each Raft group it has data for."""
    groups = {}
    for service in RAFT_SERVICES:
        directory = raft_dir(cfg, service)
        if not directory.is_dir():
            if service == CHAINFIRE.name:
                raise ClusterError(
                    f"{directory}: no Chainfire data on this machine; run this on "
                    f"{cfg.node_id} itself (its cluster-config.json names its data dir)"
                )
            continue  # a node that runs no FlareDB
        try:
            groups[service] = force_new_cluster(directory, cfg.node_id)
        except ForceNewClusterError as exc:
            raise ClusterError(f"{service}: {exc}") from None
    return groups


async def recover_node(cfg: NodeConfig, force: bool) -> Recovered:
    """On the survivor's machine with its services stopped: rewrite its data so that it
    alone is the cluster when its services start again."""
    if await asyncio.to_thread(answers, cfg.listen_host, cfg.ports):
        raise ClusterError(
            f"{cfg.node_id}'s services still run; stop them first (systemctl stop "
            "plasmacloud-iam plasmacloud-flaredb plasmacloud-chainfire): the rewrite needs "
            "their data at rest"
        )
    reachable = await check_quorum_lost(cfg.peers, cfg.node_id, force)
    return Recovered(cfg.node_id, rewrite_node(cfg), reachable, 0.0)


async def wait_serving_alone(
    cfg: NodeConfig, services: tuple[Service, ...], tls: TLSConfig, timeout: float
) -> NodeView:
    """Until the node is healthy, lists itself as the only member and leads."""
    deadline = time.monotonic() + timeout
    while True:
        view = await probe_node(cfg, services, tls)
        alone = view.members == [cfg.node_id] and view.leader_id == view.member_id
        if view.healthy and view.error is None and alone:
            return view
        if time.monotonic() > deadline:
            raise ClusterError(
                f"{cfg.node_id} not serving alone {timeout:.0f}s after the recovery: "
                f"health {view.health_summary()}, members {view.members}, error {view.error}"
            )
        await asyncio.sleep(POLL_S)


async def recover_cluster(
    target: ClusterTarget,
    survivor: str,
    force: bool,
    ready_timeout: float,
    progress: Callable[[str], None],
) -> Recovered:
    """Stop ``survivor``, make it the only member of every group, start it, and wait
    until it serves alone; its data directory must be on this machine (a local lab)."""
    control = target.control
    if control is None:
        raise ClusterError(f"the {target.name} target has no node control to restart nodes with")
    cfg = _survivor(target.configs, survivor)
    reachable = await check_quorum_lost(cfg.peers, survivor, force)
    started = time.monotonic()
    progress(f"stopping {survivor}")
    await asyncio.to_thread(control.stop_node, survivor)
    groups = rewrite_node(cfg)
    for service, forced in groups.items():
        dropped = sorted(set(forced.previous) - set(forced.members))
        progress(
            f"{service}: {survivor} alone from index {forced.index} (term {forced.term}); "
            f"dropped {', '.join(dropped) or 'nobody'}"
        )
    progress(f"starting {survivor} as a one-member cluster")
    await asyncio.to_thread(control.start_node, survivor)
    await wait_serving_alone(cfg, target.services, target.tls, ready_timeout)
    return Recovered(survivor, groups, reachable, time.monotonic() - started)
