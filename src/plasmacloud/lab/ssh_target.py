"""Real machines over SSH (:class:`~plasmacloud.lab.ssh.SSHBackend`) as a
:class:`~plasmacloud.cluster.target.ClusterTarget`: their service units controlled over
SSH, the persistence check's restart (every node's services stopped and started, then
polled until ready), and the preflight a chaos run does first. Partitions are refused:
see :data:`SSH_NO_PARTITION`."""

from __future__ import annotations

import asyncio

from plasmacloud.cluster.control import ClusterError
from plasmacloud.cluster.probe import READY_TIMEOUT_S, wait_cluster_ready
from plasmacloud.cluster.services import Service
from plasmacloud.cluster.target import ClusterTarget, Restart
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.lab.ssh import SSHBackend, unit_name

# A chaos run that dies (or loses its SSH connections) halfway through a partition would
# leave blackhole routes in production routing tables with nothing left to remove them,
# and the operator's own path to the nodes may share the routes being cut.
SSH_NO_PARTITION = (
    "partition faults are refused on the ssh backend: they would change the routing "
    "tables of real machines as root, and a run that dies mid-fault leaves the cluster "
    "cut with nothing to heal it; partitions run in the netns lab "
    "(`plasma lab up --backend netns`, then `plasma lab chaos --faults partition`)"
)


def ssh_restart(
    backend: SSHBackend,
    configs: list[NodeConfig],
    services: tuple[Service, ...],
    tls: TLSConfig,
    timeout: float = READY_TIMEOUT_S,
) -> Restart:
    """Stop every node (all down at once, so nothing survives in memory), start them all,
    wait until the cluster is healthy with one agreed leader."""

    async def restart() -> None:
        for node_id in backend.targets:
            await asyncio.to_thread(backend.stop_node, node_id)
        for node_id in backend.targets:
            await asyncio.to_thread(backend.start_node, node_id)
        await wait_cluster_ready(configs, services, tls, timeout, "after the restart")

    return restart


def ssh_target(
    backend: SSHBackend,
    configs: list[NodeConfig],
    services: tuple[Service, ...],
    tls: TLSConfig,
) -> ClusterTarget:
    """Real machines: ``configs`` as rendered from ``cluster.yaml``, dialled as the
    operator; their service units controlled over SSH. No partitions."""
    missing = sorted({c.node_id for c in configs} - set(backend.targets))
    if missing:
        raise ValueError(f"no SSH target for {', '.join(missing)}")
    return ClusterTarget(
        name=backend.name,
        configs=configs,
        tls=tls,
        services=services,
        control=backend,
        restart=ssh_restart(backend, configs, services, tls),
        no_partition=SSH_NO_PARTITION,
    )


def ssh_preflight(target: ClusterTarget) -> list[str]:
    """What stops a run over SSH before it starts: nodes that do not answer, units that
    are not active (a chaos run would start them; an operator should, knowingly)."""
    if target.control is None:
        return [f"{target.name}: no node control"]
    problems = []
    for node_id in target.node_ids:
        try:
            status = target.control.node_status(node_id)
        except ClusterError as exc:
            problems.append(str(exc))
            continue
        down = [f"{unit_name(s.service)} {s.note}" for s in status.services if not s.running]
        if down:
            problems.append(f"{node_id}: {', '.join(down)}; start them before a chaos run")
    return problems
