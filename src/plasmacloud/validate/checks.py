"""The cluster checklist (the seed's S6): each check returns one result per node, with evidence.

A check is an async function of a :class:`~plasmacloud.cluster.target.ClusterTarget` and
the run's one probe (:class:`~plasmacloud.cluster.probe.ClusterView`) returning
:class:`NodeResult`\\ s. The checklist adapts to the services the cluster runs: Chainfire's
checks always run (the reference etcd answers them too), FlareDB's and IAM's only when
that service is there, Prometheus when it is installed, and persistence (which restarts
the whole cluster) only when the caller asks for it and the target can restart.

Checks are independent of each other and mostly wait on the network, so up to
:data:`CONCURRENCY` run at once (on emulated VMs the checklist is otherwise the sum of many
round trips); the report keeps the checklist's order. A check in :data:`ALONE` disturbs the
cluster and runs by itself, after every check before it and before any after it.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from plasmacloud.cluster.probe import ClusterView, http_get
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.validate import chainfire_checks as cf
from plasmacloud.validate import flaredb_checks as fdb
from plasmacloud.validate import iam_checks as iam
from plasmacloud.validate import prometheus
from plasmacloud.validate.persistence import check_persistence
from plasmacloud.validate.results import CheckFn, CheckResult, NodeResult

__all__ = ["CheckFn", "CheckResult", "NodeResult", "checklist", "run_checks"]

Check = tuple[str, str, CheckFn]
PERSISTENCE: Check = ("persistence", "every marker back after a restart", check_persistence)
# restarts every node: nothing else may run meanwhile
ALONE = frozenset({PERSISTENCE[0]})
# checks in flight at once: enough to overlap the slow ones, few enough not to swamp a node
CONCURRENCY = 4


async def check_health(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """Every service's health endpoint (FlareDB's /readyz) answers healthy on every node."""
    out = []
    for node in view.nodes:
        bad = {s: d for s, (ok, d) in node.health.items() if not ok}
        detail = "; ".join(f"{s}: {d}" for s, d in (bad or node.health_summary()).items())
        out.append(NodeResult(node.node_id, bool(node.health) and not bad, detail))
    return out


async def check_metrics(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """Every service's Prometheus endpoint answers with samples."""
    out = []
    for cfg in t.configs:
        seen, ok = [], True
        for svc in t.services:
            if svc.metrics_url is None:
                continue
            try:
                status, body = await http_get(svc.metrics_url(cfg), t.ssl_ctx)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                seen.append(f"{svc.name}: {type(exc).__name__} {exc}")
                ok = False
                continue
            samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
            ok = ok and status == 200 and samples > 0
            seen.append(f"{svc.name}: HTTP {status}, {samples} samples")
        out.append(NodeResult(cfg.node_id, ok and bool(seen), "; ".join(seen) or "no endpoint"))
    return out


def checklist(t: ClusterTarget, persistence: bool = False) -> list[Check]:
    """The checks that apply to this cluster, in the order they run (``persistence``: add
    the restart-everything check, if the target can restart)."""
    checks: list[Check] = [
        ("health", "services report healthy", check_health),
        ("chainfire.members", "Chainfire lists every node as a member", cf.check_members),
        ("chainfire.leader", "one Chainfire leader, agreed by all", cf.check_leader),
        ("chainfire.crud", "Chainfire put here, read on every node, delete", cf.check_crud),
    ]
    if t.runs("flaredb"):
        checks += [
            ("flaredb.members", "FlareDB /nodes lists every node", fdb.check_members),
            ("flaredb.quorum", "one FlareDB leader, a majority reachable", fdb.check_quorum),
            ("flaredb.crud", "FlareDB insert here, linearizable reads, delete", fdb.check_crud),
        ]
    if t.runs("iam"):
        checks += [
            ("iam.discovery", "IAM OIDC discovery and JWKS", iam.check_discovery),
            ("iam.tokens", "IAM token issued, verified by the next node", iam.check_tokens),
        ]
    checks.append(("metrics", "Prometheus endpoints answer", check_metrics))
    if prometheus.prometheus_binary() is not None:
        checks.append(("prometheus", "Prometheus scrapes all up", prometheus.check_prometheus))
    if persistence and t.restart is not None:
        checks.append(PERSISTENCE)
    return checks


async def run_checks(
    target: ClusterTarget,
    checks: list[Check] | None = None,
    *,
    persistence: bool = False,
    concurrency: int = CONCURRENCY,
) -> list[CheckResult]:
    """Probe the cluster once, then run every check (default: :func:`checklist`), up to
    ``concurrency`` at once (those in :data:`ALONE` by themselves); results in the
    checks' order."""
    view = await target.probe()
    todo = checks if checks is not None else checklist(target, persistence)
    gate = asyncio.Semaphore(concurrency)

    async def gated(check: Check) -> CheckResult:
        async with gate:
            return await _run_one(target, view, check)

    results: list[CheckResult] = []
    batch: list[Check] = []  # consecutive checks that may overlap
    for check in [*todo, None]:
        if check is not None and check[0] not in ALONE:
            batch.append(check)
            continue
        results += await asyncio.gather(*(gated(c) for c in batch))
        batch = []
        if check is not None:
            results.append(await _run_one(target, view, check))
    return results


async def _run_one(target: ClusterTarget, view: ClusterView, check: Check) -> CheckResult:
    """One check, timed; an exception fails it on every node with the error as evidence."""
    cid, title, fn = check
    started = time.monotonic()
    try:
        node_results = await fn(target, view)
    except Exception as exc:  # one broken check must not hide the others' results
        why = f"check error: {type(exc).__name__}: {exc}"
        node_results = [NodeResult(c.node_id, False, why) for c in target.configs]
    return CheckResult(cid, title, node_results, time.monotonic() - started)
