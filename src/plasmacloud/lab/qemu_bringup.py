"""The QEMU lab's bring-up steps after the VMs are started: follow their installs,
bootstrap IAM's first admin once Chainfire has formed, record installed nodes as joined,
run the checklist until it is green.

Each waits with a bound and reports through callbacks, so ``plasma lab qemu`` only
parses, calls and prints.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import replace

from plasmacloud.cluster.probe import ClusterView, describe, probe_cluster
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.iam.bootstrap import Outcome
from plasmacloud.iam.credentials import AdminCredentials, CredentialsError
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.qemu import INSTALLED, QemuBackend
from plasmacloud.provision.states import State, StateFile
from plasmacloud.validate import prometheus
from plasmacloud.validate.checks import PERSISTENCE, Check, checklist, run_checks
from plasmacloud.validate.report import exit_code
from plasmacloud.validate.results import CheckResult, NodeResult

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


# Prometheus against TCG VMs: a TLS scrape of a Python service on an emulated CPU takes
# longer than the checklist's 1 s default (and the first scrapes land during start-up).
SLOW_PROMETHEUS = functools.partial(
    prometheus.check_prometheus, timeout=120.0, interval_s=5.0, scrape_timeout_s=4.5
)


def qemu_checks(checks: list[Check], only: list[str] | None) -> list[Check]:
    """The checklist with the VM-paced Prometheus check, cut to ``only`` if given."""
    checks = [(c, t, SLOW_PROMETHEUS if c == "prometheus" else fn) for c, t, fn in checks]
    return [c for c in checks if c[0] in only] if only else checks


async def validate_until_green(
    backend: QemuBackend,
    target: ClusterTarget,
    wait: float,
    only: list[str] | None,
    persistence: bool,
    on_waiting: Callable[[str], None],
    warn: Warn,
) -> list[CheckResult]:
    """The checklist against the VMs (``target``), repeated for up to ``wait`` s until
    green (each new state of a cluster still forming said once through ``on_waiting``);
    ``only``: just these check ids. With IAM, its first admin is bootstrapped first
    (once) for the token checks. ``persistence``: then, once, the persistence check
    through a reset of every VM."""
    configs, tls, services = target.configs, target.tls, target.services
    # Under TCG a freshly (re)booted cluster may still change leaders for a while:
    # with a wait, run the checklist again until it is green or the time is up.
    deadline = time.monotonic() + wait
    admin = None
    said = ""
    while True:
        # first: the probe's operator certificate is an IAM principal only once IAM is
        # bootstrapped (which needs only Chainfire to have formed)
        if admin is None and backend.runs_iam():
            admin = await bootstrap_admin(backend, warn)
        view = await probe_cluster(configs, services, tls)
        await asyncio.to_thread(mark_joined, backend, view, warn)
        if not view.ready and (now := describe(view)) != said:
            said = now
            on_waiting(said)
        if view.ready or time.monotonic() > deadline:
            checks = qemu_checks(checklist(target), only)
            results = await run_checks(replace(target, admin=admin), checks)
            if exit_code(results) == 0 or time.monotonic() > deadline:
                break
        await asyncio.sleep(2)
    if persistence:
        results.append(await _persistence(target, results))
    return results


async def _persistence(target: ClusterTarget, before: list[CheckResult]) -> CheckResult:
    """The persistence check through a reset of every VM; not run (a failure saying why)
    unless everything before it was green: a reset takes minutes and proves nothing then."""
    cid, title, _fn = PERSISTENCE
    if exit_code(before) != 0:
        why = "not run: the checks before it are not green"
        return CheckResult(cid, title, [NodeResult(c.node_id, False, why) for c in target.configs])
    results = await run_checks(target, [PERSISTENCE])
    return results[0]
