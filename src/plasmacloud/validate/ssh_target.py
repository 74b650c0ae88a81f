"""The persistence check's restart on real machines: every node's services stopped and
started over SSH (:class:`~plasmacloud.lab.ssh.SSHBackend`), then polled until ready."""

from __future__ import annotations

import asyncio
import time

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import describe
from plasmacloud.lab.probe import probe_cluster
from plasmacloud.lab.services import ServiceSpec
from plasmacloud.lab.ssh import SSHBackend
from plasmacloud.validate.target import Restart

READY_TIMEOUT_S = 90.0
POLL_S = 0.5


def ssh_restart(
    backend: SSHBackend,
    configs: list[NodeConfig],
    services: tuple[ServiceSpec, ...],
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
        deadline = time.monotonic() + timeout
        while not (view := await probe_cluster(configs, services, tls)).ready:
            if time.monotonic() > deadline:
                raise LabError(f"not ready {timeout:.0f}s after the restart: {describe(view)}")
            await asyncio.sleep(POLL_S)

    return restart
