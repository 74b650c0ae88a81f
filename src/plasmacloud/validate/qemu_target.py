"""The QEMU lab's persistence restart: every VM hard-reset at once (the reset button, not
a service restart), PXE-booted and installed again from the disk it kept, then polled
until the cluster is ready. Runs inside the lab namespace, like every check of the VMs."""

from __future__ import annotations

import asyncio
import time

from plasmacloud.lab.qemu import QemuBackend
from plasmacloud.validate.ssh_target import wait_cluster_ready
from plasmacloud.validate.target import Restart

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
