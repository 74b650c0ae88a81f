"""What a chaos run needs of a cluster, and the two ways to get it.

:func:`plasmacloud.lab.chaos.run_chaos` only sees a :class:`ChaosTarget`: the node ids,
each node's config (client endpoints) and the operator's TLS, a
:class:`~plasmacloud.lab.backend.NodeBackend` to kill, stop, start and pause nodes with,
and, where the backend can do it safely, a :class:`Partitioner`.

* :func:`lab_target`: a lab on this machine (process or netns backend; partitions on netns).
* :func:`ssh_target`: real machines from ``cluster.yaml``, controlled over SSH
  (:class:`~plasmacloud.lab.ssh.SSHBackend`). Partitions are refused: see
  :data:`SSH_NO_PARTITION`.
* :func:`qemu_target`: the QEMU lab's VMs, their services over SSH like real machines,
  plus power cuts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.lab.backend import LabError, NodeBackend
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import NetnsBackend
from plasmacloud.lab.probe import ClusterView, probe_cluster
from plasmacloud.lab.qemu import QemuBackend, vm_ssh_options
from plasmacloud.lab.services import ServiceSpec
from plasmacloud.lab.ssh import NodeCtl, SSHBackend, unit_name
from plasmacloud.provision.image import VM_NODE_CTL
from plasmacloud.provision.spec import SSHTarget
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
QEMU_NO_PARTITION = "partition faults need the netns backend; the qemu lab has power cuts"
# One service restart under emulation takes tens of seconds; a power cut means PXE boot,
# the agent and three services starting on an emulated CPU (~3-4 min).
QEMU_RECOVER_S = 600.0


class PowerSwitch(Protocol):
    """Cuts and restores machines' power (VMs: see :meth:`QemuBackend.cut_power`)."""

    def cut_power(self, node_id: str) -> None:
        """The machine stops dead, without warning."""
        ...

    def restore_power(self, node_id: str) -> None:
        """Power back on (the machine boots again); nothing if it was not cut."""
        ...


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
    power: PowerSwitch | None = None
    # how long a fault's recovery may take before the run gives up (seconds)
    recover_timeout_s: float = 60.0

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


def qemu_target(lab: QemuBackend) -> ChaosTarget:
    """The QEMU lab's VMs, from inside the lab namespace (the only place their addresses
    exist): each VM's services are node_ctl units (see the image's init), controlled over
    SSH with the lab's key; power cuts through QMP. No partitions."""
    configs, tls, services = lab.validation_target()
    ssh = SSHBackend(
        targets={c.node_id: SSHTarget(host=str(c.ip)) for c in configs},
        options=vm_ssh_options(lab),
        manager=NodeCtl(VM_NODE_CTL),
        services=tuple(s.name for s in services),
        name="qemu",
    )
    return replace(
        ssh_target(ssh, configs, services, tls),
        no_partition=QEMU_NO_PARTITION,
        power=lab,
        recover_timeout_s=QEMU_RECOVER_S,
    )


def ssh_preflight(target: ChaosTarget) -> list[str]:
    """What stops a run over SSH before it starts: nodes that do not answer, units that
    are not active (a chaos run would start them; an operator should, knowingly)."""
    problems = []
    for node_id in target.node_ids:
        try:
            status = target.backend.node_status(node_id)
        except LabError as exc:
            problems.append(str(exc))
            continue
        down = [f"{unit_name(s.service)} {s.note}" for s in status.services if not s.running]
        if down:
            problems.append(f"{node_id}: {', '.join(down)}; start them before a chaos run")
    return problems
