"""Real machines over SSH (:class:`~plasmacloud.lab.ssh.SSHBackend`): the persistence
check's restart (every node's services stopped and started, then polled until ready) and
the ready wait that chaos runs share with it."""

from __future__ import annotations

import asyncio
import time

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import describe
from plasmacloud.lab.probe import ClusterView, probe_cluster
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
        await wait_cluster_ready(configs, services, tls, timeout, "after the restart")

    return restart


async def wait_cluster_ready(
    configs: list[NodeConfig],
    services: tuple[ServiceSpec, ...],
    tls: TLSConfig,
    timeout: float = READY_TIMEOUT_S,
    when: str = "",
) -> ClusterView:
    """Poll the nodes until every one is healthy and all agree on one leader; LabError
    saying what is still wrong after ``timeout`` seconds (``when``: e.g. "after the restart")."""
    deadline = time.monotonic() + timeout
    while not (view := await probe_cluster(configs, services, tls)).ready:
        if time.monotonic() > deadline:
            after = f" {when}" if when else ""
            raise LabError(f"not ready {timeout:.0f}s{after}: {describe(view)}")
        await asyncio.sleep(POLL_S)
    return view
