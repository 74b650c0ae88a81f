"""The QEMU lab's bring-up steps after the VMs are started: follow their installs,
bootstrap IAM's first admin once Chainfire has formed, record installed nodes as joined.

Each waits with a bound and reports through callbacks, so ``plasma lab qemu`` only
parses, calls and prints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from plasmacloud.iam.bootstrap import Outcome
from plasmacloud.iam.credentials import AdminCredentials, CredentialsError
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.probe import ClusterView
from plasmacloud.lab.qemu import INSTALLED, QemuBackend
from plasmacloud.provision.states import State, StateFile

Warn = Callable[[str], None]


def follow_installs(
    backend: QemuBackend,
    wanted: list[str],
    deadline: float,
    on_progress: Callable[[StateFile], None],
    poll_s: float = 1.0,
) -> tuple[bool, dict[str, State]]:
    """Poll provisioning (each reading shown through ``on_progress``) until every wanted
    node is installed, one failed or ``deadline`` (monotonic) passed; whether all are
    installed, and their last states."""
    while True:
        data = backend.provisioning()
        on_progress(data)
        states = {n: data.nodes[n].state for n in wanted}
        if all(s in INSTALLED for s in states.values()):
            return True, states
        if any(s == State.FAILED for s in states.values()) or time.monotonic() > deadline:
            return False, states
        time.sleep(poll_s)


async def bootstrap_admin(backend: QemuBackend, warn: Warn) -> AdminCredentials | None:
    """IAM's bootstrap admin, created now if need be; None while Chainfire cannot take it
    yet (not formed) or when its credentials file was lost (said through ``warn``)."""
    try:
        outcome = await backend.bootstrap_iam()
    except Exception:  # gRPC and store errors share no base class worth naming
        return None
    if outcome == Outcome.LOST:
        warn(f"IAM was bootstrapped before, {backend.paths.admin} is gone")
    try:
        return AdminCredentials.read(backend.paths.admin)
    except CredentialsError:
        return None


def bootstrap_admin_within(
    backend: QemuBackend, wait: float, warn: Warn, poll_s: float = 2.0
) -> AdminCredentials | None:
    """:func:`bootstrap_admin`, tried again for up to ``wait`` s; None if never done."""
    deadline = time.monotonic() + wait
    while True:
        admin = asyncio.run(bootstrap_admin(backend, warn))
        if admin is not None or time.monotonic() > deadline:
            return admin
        time.sleep(poll_s)


def mark_joined(backend: QemuBackend, view: ClusterView, warn: Warn) -> None:
    """Once the cluster is ready, its installed nodes are recorded as ``joined`` (the last
    provisioning state: the agent reports up to ``installed``, only a probe of the whole
    cluster can tell membership). Inside the lab namespace; a miss is warned, not fatal."""
    if not view.ready:
        return
    try:
        backend.mark_joined([v.node_id for v in view.nodes], f"leader {view.leader_node}")
    except LabError as exc:
        warn(str(exc))
