"""Run the checklist against a lab: its configs and operator TLS, IAM's bootstrap admin
from ``<lab>/admin.json``, and (opt-in) a full restart through the lab's backend."""

from __future__ import annotations

import asyncio

from plasmacloud.iam.credentials import AdminCredentials, CredentialsError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import runs_iam
from plasmacloud.validate.checks import run_checks
from plasmacloud.validate.target import CheckResult, Restart

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


async def validate_lab(lab: Lab, persistence: bool = False) -> list[CheckResult]:
    """The checklist for ``lab``; ``persistence`` adds the restart-everything check."""
    return await run_checks(
        lab.configs(),
        lab.operator_tls,
        lab.services,
        admin=lab_admin(lab),
        restart=lab_restart(lab) if persistence else None,
    )
