"""A lab directory as a :class:`~plasmacloud.cluster.target.ClusterTarget`: its configs and
operator TLS, IAM's bootstrap admin from ``<lab>/admin.json``, its backend to control the
nodes with (partitions on netns), its ready wait, and a full restart through the backend."""

from __future__ import annotations

import asyncio
from functools import partial

from plasmacloud.cluster.probe import ClusterView
from plasmacloud.cluster.services import runs_iam
from plasmacloud.cluster.target import ClusterTarget, Restart
from plasmacloud.iam.credentials import AdminCredentials, CredentialsError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.members import replace_lab_node
from plasmacloud.lab.netns import NetnsBackend

LAB_NO_PARTITION = "partition faults need the netns backend (`lab up --backend netns`)"
RESTART_READY_TIMEOUT_S = 60.0


def lab_restart(lab: Lab, timeout: float = RESTART_READY_TIMEOUT_S) -> Restart:
    """Stop every node's services (backend.stop_node), start them again, wait until ready."""

    async def restart() -> None:
        backend = lab.backend
        for node_id in lab.spec.node_ids:
            await asyncio.to_thread(backend.stop_node, node_id)
        lab.prepare()
        for node_id in lab.spec.node_ids:
            await asyncio.to_thread(backend.start_node, node_id)
        await lab.wait_ready(timeout=timeout)

    return restart


def lab_admin(lab: Lab) -> AdminCredentials | None:
    """The bootstrap admin when the lab runs IAM and its file is readable, else None."""
    if not runs_iam(lab.services):
        return None
    try:
        return AdminCredentials.read(lab.layout.admin_credentials)
    except CredentialsError:
        return None  # the IAM token check then fails saying so


def lab_target(lab: Lab) -> ClusterTarget:
    """A running lab: its backend, ready wait (which fails early when a service process
    exits), restart and node replacement; partitions on the netns backend."""
    backend = lab.backend

    async def wait_ready(timeout: float) -> ClusterView:
        return await lab.wait_ready(timeout=timeout)

    return ClusterTarget(
        name=lab.state.backend,
        configs=lab.configs(),
        tls=lab.operator_tls,
        services=lab.services,
        admin=lab_admin(lab),
        control=backend,
        ready_wait=wait_ready,
        restart=lab_restart(lab),
        partitioner=backend if isinstance(backend, NetnsBackend) else None,
        no_partition=LAB_NO_PARTITION,
        replace_node=partial(replace_lab_node, lab),
    )
