"""Which checks run for which services, and the scrape config Prometheus is given
(no cluster needed: node configs come from a lab layout in a temp dir)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from plasmacloud.cluster.probe import ClusterView
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.lab.layout import LabLayout
from plasmacloud.lab.reference import ETCD
from plasmacloud.lab.services import CHAINFIRE, FLAREDB, IAM, SERVICES, ServiceSpec
from plasmacloud.lab.spec import LabSpec, scratch_spec
from plasmacloud.validate import checks, prometheus
from plasmacloud.validate.results import NodeResult


def target(
    tmp_path: Path,
    services: tuple[ServiceSpec, ...],
    restart: bool = False,
    spec: LabSpec | None = None,
) -> ClusterTarget:
    layout, spec = LabLayout(tmp_path), spec or LabSpec()
    configs = [layout.node_config(spec, n) for n in spec.node_ids]

    async def noop() -> None:
        return None

    return ClusterTarget(
        "test", configs, layout.operator_tls(spec), services, restart=noop if restart else None
    )


@pytest.mark.parametrize(
    ("services", "present", "absent"),
    [
        ((ETCD,), {"chainfire.crud", "metrics"}, {"flaredb.crud", "iam.tokens"}),
        ((CHAINFIRE, FLAREDB), {"flaredb.members", "flaredb.quorum"}, {"iam.discovery"}),
        (SERVICES, {"flaredb.crud", "iam.discovery", "iam.tokens"}, {"persistence"}),
    ],
)
def test_checklist_follows_the_services(
    tmp_path: Path, services: tuple[ServiceSpec, ...], present: set[str], absent: set[str]
) -> None:
    ids = [cid for cid, _title, _fn in checks.checklist(target(tmp_path, services))]
    assert ids[0] == "health" and len(ids) == len(set(ids))
    assert present <= set(ids) and not absent & set(ids)
    assert ("prometheus" in ids) == (prometheus.prometheus_binary() is not None)


def test_persistence_runs_last_and_only_when_asked_and_a_restart_is_given(
    tmp_path: Path,
) -> None:
    restartable = target(tmp_path, SERVICES, restart=True)
    ids = [cid for cid, _t, _f in checks.checklist(restartable, persistence=True)]
    assert ids[-1] == "persistence"
    assert "persistence" not in [cid for cid, _t, _f in checks.checklist(restartable)]
    fixed = checks.checklist(target(tmp_path, SERVICES), persistence=True)
    assert "persistence" not in [cid for cid, _t, _f in fixed]


def test_scrape_config_has_a_job_per_service_and_tls_only_where_https(tmp_path: Path) -> None:
    t = target(tmp_path, (CHAINFIRE, FLAREDB, IAM))
    jobs = {j["job_name"]: j for j in prometheus.scrape_config(t)["scrape_configs"]}
    assert set(jobs) == {"chainfire", "flaredb", "iam"}
    assert jobs["chainfire"]["scheme"] == "http" and "tls_config" not in jobs["chainfire"]
    for name in ("flaredb", "iam"):
        assert jobs[name]["scheme"] == "https"
        assert jobs[name]["tls_config"] == {
            "ca_file": str(t.tls.ca_file),
            "cert_file": str(t.tls.cert_file),
            "key_file": str(t.tls.key_file),
        }
    flaredb = jobs["flaredb"]
    assert flaredb["metrics_path"] == "/metrics"
    nodes = [s["labels"]["node"] for s in flaredb["static_configs"]]
    assert nodes == ["node01", "node02", "node03"]
    assert flaredb["static_configs"][0]["targets"] == ["127.0.0.11:4001"]


def test_scrape_timing_defaults_to_1s_and_slow_backends_choose_theirs(tmp_path: Path) -> None:
    t = target(tmp_path, (CHAINFIRE,))
    assert prometheus.scrape_config(t)["global"] == {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
    }
    slow = prometheus.scrape_config(t, interval_s=5, timeout_s=4.5)["global"]
    assert slow == {"scrape_interval": "5s", "scrape_timeout": "4500ms"}  # no "4.5s"
    # Prometheus itself accepts it (it refuses to start on "4.5s")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(prometheus.scrape_config(t, interval_s=5, timeout_s=4.5)))
    done = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_check_that_raises_fails_every_node_and_the_rest_still_run(
    tmp_path: Path,
) -> None:
    # plain TCP on a scratch range nothing listens on: the probe only records errors
    t = target(tmp_path, (ETCD,), spec=scratch_spec(tls=False))

    async def broken(_t: ClusterTarget, _view: ClusterView) -> list[NodeResult]:
        raise RuntimeError("certificate verify failed")

    async def fine(t: ClusterTarget, _view: ClusterView) -> list[NodeResult]:
        return [NodeResult(c.node_id, True, "ok") for c in t.configs]

    results = await checks.run_checks(t, [("a", "raises", broken), ("b", "fine", fine)])
    assert [c.ok for c in results] == [False, True]
    assert {r.evidence for r in results[0].results} == {
        "check error: RuntimeError: certificate verify failed"
    }


def _ok(t: ClusterTarget) -> list[NodeResult]:
    return [NodeResult(c.node_id, True, "ok") for c in t.configs]


async def test_checks_overlap_and_the_report_keeps_the_checklist_order(tmp_path: Path) -> None:
    t = target(tmp_path, (ETCD,), spec=scratch_spec(tls=False))
    second_started = asyncio.Event()

    async def waits_for_second(t: ClusterTarget, _view: ClusterView) -> list[NodeResult]:
        # finishes only if the next check runs meanwhile (a sequential run times out)
        await asyncio.wait_for(second_started.wait(), timeout=30)
        return _ok(t)

    async def second(t: ClusterTarget, _view: ClusterView) -> list[NodeResult]:
        second_started.set()
        return _ok(t)

    async def failing(t: ClusterTarget, _view: ClusterView) -> list[NodeResult]:
        return [NodeResult(c.node_id, c.node_id != "node02", "n") for c in t.configs]

    listed = [("a", "waits", waits_for_second), ("b", "second", second), ("c", "fails", failing)]
    results = await checks.run_checks(t, listed)
    assert [c.check_id for c in results] == ["a", "b", "c"]
    assert [c.ok for c in results] == [True, True, False]
    assert [r.ok for r in results[2].results] == [True, False, True]


async def test_one_at_a_time_gives_the_same_report(tmp_path: Path) -> None:
    t = target(tmp_path, (ETCD,), spec=scratch_spec(tls=False))

    async def fine(t: ClusterTarget, _view: ClusterView) -> list[NodeResult]:
        await asyncio.sleep(0.01)
        return _ok(t)

    async def broken(_t: ClusterTarget, _view: ClusterView) -> list[NodeResult]:
        raise RuntimeError("boom")

    listed = [("a", "fine", fine), ("b", "raises", broken), ("c", "fine", fine)]
    together = await checks.run_checks(t, listed)
    sequential = await checks.run_checks(t, listed, concurrency=1)
    assert [(c.check_id, c.title, c.results) for c in together] == [
        (c.check_id, c.title, c.results) for c in sequential
    ]
    assert [c.ok for c in together] == [True, False, True]


async def test_a_disturbing_check_runs_alone_between_the_others(tmp_path: Path) -> None:
    t = target(tmp_path, (ETCD,), spec=scratch_spec(tls=False))
    running: set[str] = set()
    seen_with: dict[str, set[str]] = {}

    def tracked(cid: str) -> checks.CheckFn:
        async def fn(t: ClusterTarget, _view: ClusterView) -> list[NodeResult]:
            seen_with[cid] = set(running)  # on entry and on exit: who else ran
            running.add(cid)
            await asyncio.sleep(0.05)
            seen_with[cid] |= running - {cid}
            running.discard(cid)
            return _ok(t)

        return fn

    alone = checks.PERSISTENCE[0]
    ids = ["a", "b", alone, "c", "d"]
    results = await checks.run_checks(t, [(c, c, tracked(c)) for c in ids])
    assert [c.check_id for c in results] == ids
    assert seen_with[alone] == set()
    # the others overlapped with their neighbours, and only with them
    assert seen_with["b"] == {"a"} and seen_with["d"] == {"c"}
