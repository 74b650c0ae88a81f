"""The checklist against the QEMU lab's VMs, repeated until green within a wait, and its
persistence restart: every VM hard-reset at once (the reset button, not a service
restart), PXE-booted and installed again from the disk it kept, then polled until the
cluster is ready. Runs inside the lab namespace, like every check of the VMs."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.lab.control import describe
from plasmacloud.lab.probe import probe_cluster
from plasmacloud.lab.qemu import QemuBackend
from plasmacloud.lab.qemu_bringup import Warn, bootstrap_admin, mark_joined
from plasmacloud.lab.services import ServiceSpec
from plasmacloud.validate import prometheus
from plasmacloud.validate.checks import PERSISTENCE, Check, checklist, run_checks
from plasmacloud.validate.report import exit_code
from plasmacloud.validate.ssh_target import wait_cluster_ready
from plasmacloud.validate.target import CheckResult, NodeResult, Restart, Target

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


# Prometheus against TCG VMs: a TLS scrape of a Python service on an emulated CPU takes
# longer than the checklist's 1 s default (and the first scrapes land during start-up).
SLOW_PROMETHEUS = functools.partial(
    prometheus.check_prometheus, timeout=120.0, interval_s=5.0, scrape_timeout_s=4.5
)


def qemu_checks(checks: list[Check], only: list[str] | None) -> list[Check]:
    """The checklist with the VM-paced Prometheus check, cut to ``only`` if given."""
    checks = [(c, t, SLOW_PROMETHEUS if c == "prometheus" else fn) for c, t, fn in checks]
    return [c for c in checks if c[0] in only] if only else checks


async def validate_qemu(
    backend: QemuBackend,
    wait: float,
    only: list[str] | None,
    persistence: bool,
    on_waiting: Callable[[str], None],
    warn: Warn,
) -> list[CheckResult]:
    """The checklist against the VMs, repeated for up to ``wait`` s until green (each new
    state of a cluster still forming said once through ``on_waiting``); ``only``: just
    these check ids. With IAM, its first admin is bootstrapped first (once) for the token
    checks. ``persistence``: then, once, the persistence check through a reset of every VM."""
    configs, tls, services = backend.validation_target()
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
            checks = qemu_checks(checklist(Target(configs, tls, services, view)), only)
            results = await run_checks(configs, tls, services, checks, admin=admin)
            if exit_code(results) == 0 or time.monotonic() > deadline:
                break
        await asyncio.sleep(2)
    if persistence:
        results.append(await _persistence(backend, configs, tls, services, results))
    return results


async def _persistence(
    backend: QemuBackend,
    configs: list[NodeConfig],
    tls: TLSConfig,
    services: tuple[ServiceSpec, ...],
    before: list[CheckResult],
) -> CheckResult:
    """The persistence check through a reset of every VM; not run (a failure saying why)
    unless everything before it was green: a reset takes minutes and proves nothing then."""
    cid, title, _fn = PERSISTENCE
    if exit_code(before) != 0:
        why = "not run: the checks before it are not green"
        return CheckResult(cid, title, [NodeResult(c.node_id, False, why) for c in configs])
    restart = qemu_restart(backend)
    results = await run_checks(configs, tls, services, [PERSISTENCE], restart=restart)
    return results[0]
