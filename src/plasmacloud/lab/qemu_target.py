"""The QEMU lab's VMs as a :class:`~plasmacloud.cluster.target.ClusterTarget`, from inside
the lab namespace (the only place their addresses exist): each VM's services are node_ctl
units (see the image's init), controlled over SSH with the lab's key; power cuts through
QMP; the persistence restart is every VM hard-reset at once (the reset button, not a
service restart), PXE-booted and installed again from the disk it kept, then polled until
the cluster is ready. No partitions."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from plasmacloud.cluster.probe import wait_cluster_ready
from plasmacloud.cluster.target import ClusterTarget, Restart
from plasmacloud.lab.qemu import QemuBackend, vm_ssh_options
from plasmacloud.lab.ssh import NodeCtl, SSHBackend
from plasmacloud.lab.ssh_target import ssh_target
from plasmacloud.provision.image import VM_NODE_CTL
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.spec import SSHTarget

QEMU_NO_PARTITION = "partition faults need the netns backend; the qemu lab has power cuts"
# One service restart under emulation takes tens of seconds; a power cut means PXE boot,
# the agent and three services starting on an emulated CPU (~3-4 min).
QEMU_RECOVER_S = 600.0
# Three TCG VMs booting at once on two cores: ~1 min to "installed", ~2.5 min more until
# three Python services answer; the bound leaves room for a heavily loaded host.
REBOOT_TIMEOUT_S = 900.0


def qemu_restart(backend: QemuBackend, timeout: float = REBOOT_TIMEOUT_S) -> Restart:
    """Reset every VM, wait for each to be installed again, then for a ready cluster."""

    async def restart() -> None:
        configs, tls, services = backend.validation_target()
        deadline = time.monotonic() + timeout
        await asyncio.to_thread(backend.reboot, [c.node_id for c in configs], timeout)
        left = max(deadline - time.monotonic(), 1.0)
        await wait_cluster_ready(configs, services, tls, left, "after the reset")

    return restart


def qemu_target(lab: QemuBackend) -> ClusterTarget:
    """The VMs' services over SSH like real machines, plus power cuts and the reset. Its
    configs name each node's TLS files in the lab's tree, so this host can act as a
    member where only members may (a backup reads IAM's records with a node's certificate)."""
    rendered, tls, services = lab.validation_target()
    configs = [OutputLayout(lab.paths.out).local_config(c) for c in rendered]
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
        restart=qemu_restart(lab),
        recover_timeout_s=QEMU_RECOVER_S,
    )
