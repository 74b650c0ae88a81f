"""What a chaos run needs of a cluster, and the two ways to get it.

:func:`plasmacloud.lab.chaos.run_chaos` only sees a :class:`ChaosTarget`: the node ids,
each node's config (client endpoints) and the operator's TLS, a
:class:`~plasmacloud.lab.backend.NodeBackend` to kill, stop, start and pause nodes with,
and, where the backend can do it safely, a :class:`Partitioner`.

* :func:`lab_target`: a lab on this machine (process or netns backend; partitions on netns).
* :func:`ssh_target`: real machines from ``cluster.yaml``, controlled over SSH
  (:class:`~plasmacloud.lab.ssh.SSHBackend`). Partitions are refused: see
  :data:`SSH_NO_PARTITION`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.lab.backend import LabError, NodeBackend
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import NetnsBackend
from plasmacloud.lab.probe import ClusterView, probe_cluster
from plasmacloud.lab.services import ServiceSpec
from plasmacloud.lab.ssh import SSHBackend, unit_name
from plasmacloud.validate.ssh_target import wait_cluster_ready

# A chaos run that dies (or loses its SSH connections) halfway through a partition would
# leave blackhole routes in production routing tables with nothing left to remove them,
# and the operator's own path to the nodes may share the routes being cut.
SSH_NO_PARTITION = (
    "partition faults are refused on the ssh backend: they would change the routing "
    "tables of real machines as root, and a run that dies mid-fault leaves the cluster "
    "cut with nothing to heal it; partitions run in the netns lab "
    "(`plasma lab up --backend netns`, then `plasma lab chaos --faults partition`)"
)
LAB_NO_PARTITION = "partition faults need the netns backend (`lab up --backend netns`)"


class Partitioner(Protocol):
    """Cuts and restores links between nodes."""

    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        """Cut every link between the two groups (both directions)."""
        ...

    def heal(self) -> None:
        """Restore every link."""
        ...


@dataclass(frozen=True)
class ChaosTarget:
    """The cluster a chaos run works on and how its nodes are hurt."""

    name: str  # the backend, recorded in the history ("process", "netns", "ssh")
    configs: list[NodeConfig]
    tls: TLSConfig
    services: tuple[ServiceSpec, ...]
    backend: NodeBackend
    probe: Callable[[], Awaitable[ClusterView]]
    # raises LabError unless healthy with one agreed leader within the timeout (seconds)
    wait_ready: Callable[[float], Awaitable[ClusterView]]
    partitioner: Partitioner | None = None
    no_partition: str = ""  # why there is no partitioner (the error a user sees)

    @property
    def node_ids(self) -> list[str]:
        return [c.node_id for c in self.configs]

    def runs(self, service: str) -> bool:
        """True if the cluster runs a service of that registry name."""
        return any(s.name == service for s in self.services)


def lab_target(lab: Lab) -> ChaosTarget:
    """A running lab: its backend, probe and ready wait (which fails early when a
    service process exits); partitions on the netns backend."""
    backend = lab.backend

    async def wait_ready(timeout: float) -> ClusterView:
        return await lab.wait_ready(timeout=timeout)

    async def probe() -> ClusterView:
        return await lab.probe()

    return ChaosTarget(
        name=lab.state.backend,
        configs=lab.configs(),
        tls=lab.operator_tls,
        services=lab.services,
        backend=backend,
        probe=probe,
        wait_ready=wait_ready,
        partitioner=backend if isinstance(backend, NetnsBackend) else None,
        no_partition=LAB_NO_PARTITION,
    )


def ssh_target(
    backend: SSHBackend,
    configs: list[NodeConfig],
    services: tuple[ServiceSpec, ...],
    tls: TLSConfig,
) -> ChaosTarget:
    """Real machines: ``configs`` as rendered from ``cluster.yaml``, dialled as the
    operator; their service units controlled over SSH. No partitions."""
    missing = sorted({c.node_id for c in configs} - set(backend.targets))
    if missing:
        raise ValueError(f"no SSH target for {', '.join(missing)}")

    async def wait_ready(timeout: float) -> ClusterView:
        return await wait_cluster_ready(configs, services, tls, timeout)

    async def probe() -> ClusterView:
        return await probe_cluster(configs, services, tls)

    return ChaosTarget(
        name=backend.name,
        configs=configs,
        tls=tls,
        services=services,
        backend=backend,
        probe=probe,
        wait_ready=wait_ready,
        no_partition=SSH_NO_PARTITION,
    )


def ssh_preflight(backend: SSHBackend) -> list[str]:
    """What stops a run before it starts: nodes that do not answer over SSH, units that
    are not active (a chaos run would start them; an operator should, knowingly)."""
    problems = []
    for node_id in backend.targets:
        try:
            status = backend.node_status(node_id)
        except LabError as exc:
            problems.append(str(exc))
            continue
        down = [f"{unit_name(s.service)} {s.note}" for s in status.services if not s.running]
        if down:
            problems.append(f"{node_id}: {', '.join(down)}; start them before a chaos run")
    return problems
