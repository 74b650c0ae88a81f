"""The checklist on a live reference cluster (etcd 3.4, mTLS): all green, then a node down."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK
from plasmacloud.lab.control import Lab
from plasmacloud.lab.target import lab_target
from plasmacloud.validate.checks import run_checks
from plasmacloud.validate.persistence import check_persistence
from plasmacloud.validate.report import exit_code, report_json

pytestmark = pytest.mark.slow


async def test_healthy_cluster_passes_every_check_then_a_dead_node_fails(etcd_lab: Lab) -> None:
    view = await etcd_lab.wait_ready(timeout=60)
    results = await run_checks(lab_target(etcd_lab))
    doc = report_json(results)
    assert doc["ok"], doc
    assert exit_code(results) == EXIT_OK
    ids = [c["id"] for c in doc["checks"]]
    # etcd runs no FlareDB or IAM, so their checks are left out; Prometheus is installed
    want = ["health", "chainfire.members", "chainfire.leader", "chainfire.crud", "metrics"]
    assert ids == [*want, "prometheus"]
    crud = next(c for c in doc["checks"] if c["id"] == "chainfire.crud")
    assert [n["node"] for n in crud["nodes"]] == etcd_lab.spec.node_ids
    assert all("read on 3/3 nodes, deleted 1" in n["evidence"] for n in crud["nodes"])

    # a follower dies (the leader would make the others fail too until a re-election)
    dead, alive = (n for n in etcd_lab.spec.node_ids if n != view.leader_node)
    etcd_lab.backend.kill_node(dead)
    results = await run_checks(lab_target(etcd_lab))
    assert exit_code(results) == EXIT_FAILURE
    failed = {(c.check_id, r.node_id) for c in results for r in c.results if not r.ok}
    assert ("health", dead) in failed
    assert ("chainfire.crud", dead) in failed
    # a live node still writes, but its write cannot be read back on the dead one
    crud = {
        r.node_id: r.evidence for c in results if c.check_id == "chainfire.crud" for r in c.results
    }
    assert "read on 2/3 nodes" in crud[alive] and dead in crud[alive], crud[alive]
    assert "UNAVAILABLE" in crud[dead] or "DEADLINE_EXCEEDED" in crud[dead], crud[dead]


async def test_persistence_fails_when_the_restart_loses_the_data(etcd_lab: Lab) -> None:
    await etcd_lab.wait_ready(timeout=60)
    nodes = etcd_lab.spec.node_ids

    async def restart_wiped() -> None:
        """A restart that comes back empty: what a data dir on tmpfs would do."""
        for n in nodes:
            etcd_lab.backend.stop_node(n)
        for n in nodes:
            shutil.rmtree(etcd_lab.layout.data_dir(n))
            etcd_lab.layout.data_dir(n).mkdir()
        for n in nodes:
            etcd_lab.backend.start_node(n)
        await etcd_lab.wait_ready(timeout=60)

    (persistence,) = await run_checks(
        dataclasses.replace(lab_target(etcd_lab), restart=restart_wiped),
        [("persistence", "markers back after a restart", check_persistence)],
    )
    assert not persistence.ok
    for r in persistence.results:
        assert "0/3 Chainfire keys back" in r.evidence and "FlareDB" not in r.evidence, r
