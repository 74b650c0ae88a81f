"""The whole checklist on a process lab running every service (as `plasma lab up`): green,
persistence across a full restart included, JUnit well-formed; then each kind of check
turned red on purpose (a broken CA path, wrong admin credentials, a stopped node, a
removed member) and seen failing with the evidence that says why."""

from __future__ import annotations

import asyncio
import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.iam.bootstrap import Outcome
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import SERVICES, ServiceSpec
from plasmacloud.lab.target import lab_target
from plasmacloud.provision import pki
from plasmacloud.validate.checks import run_checks
from plasmacloud.validate.report import all_ok, report_json, report_junit
from plasmacloud.validate.results import CheckResult

pytestmark = pytest.mark.slow

ALL_IDS = [
    "health",
    "chainfire.members",
    "chainfire.leader",
    "chainfire.crud",
    "flaredb.members",
    "flaredb.quorum",
    "flaredb.crud",
    "iam.discovery",
    "iam.tokens",
    "metrics",
    "prometheus",
]


def evidence(results: list[CheckResult], check_id: str) -> dict[str, tuple[bool, str]]:
    """node -> (ok, evidence) of one check."""
    (check,) = [c for c in results if c.check_id == check_id]
    return {r.node_id: (r.ok, r.evidence) for r in check.results}


@pytest.fixture
def full_lab(lab_factory: Callable[[tuple[ServiceSpec, ...]], Lab]) -> Lab:
    lab = lab_factory(SERVICES)
    asyncio.run(lab.wait_ready(timeout=60))
    assert lab.iam_bootstrap == Outcome.CREATED  # waiting for ready bootstrapped IAM
    return lab


async def test_green_with_persistence_then_each_check_red_for_its_reason(
    full_lab: Lab, tmp_path: Path
) -> None:
    lab = full_lab
    nodes = lab.spec.node_ids

    # all green, with the full restart; the report is well-formed JUnit
    target = lab_target(lab)
    results = await run_checks(target, persistence=True)
    doc = report_json(results)
    assert doc["ok"], doc
    assert [c.check_id for c in results] == [*ALL_IDS, "persistence"]
    for node, (ok, text) in evidence(results, "persistence").items():
        assert ok and "3/3 Chainfire keys, 3/3 FlareDB rows back" in text, (node, text)
    for node, (_ok, text) in evidence(results, "prometheus").items():
        assert text == "chainfire up, flaredb up, iam up", (node, text)
    suite = ET.fromstring(report_junit(results)).find("testsuite")
    assert suite is not None
    assert suite.get("tests") == str(len(results) * len(nodes)) and suite.get("failures") == "0"

    # a CA that did not sign the nodes' certificates: nothing is trusted
    pki.init_ca(tmp_path / "other-pki")
    bad_tls = lab.operator_tls.model_copy(update={"ca_file": tmp_path / "other-pki" / "ca.crt"})
    results = await run_checks(dataclasses.replace(target, tls=bad_tls))
    assert not all_ok(results)
    for check_id in ("chainfire.crud", "flaredb.crud", "iam.discovery"):
        for node, (ok, text) in evidence(results, check_id).items():
            assert not ok and "CERTIFICATE_VERIFY_FAILED" in text.upper().replace(" ", "_"), (
                check_id,
                node,
                text,
            )

    # wrong admin secret: IAM refuses to issue the token
    admin = target.admin
    assert admin is not None
    wrong = dataclasses.replace(admin, client_secret="not-the-secret")
    results = await run_checks(dataclasses.replace(target, admin=wrong))
    for node, (ok, text) in evidence(results, "iam.tokens").items():
        assert not ok and text.startswith("token: HTTP 401"), (node, text)
    assert all(c.ok for c in results if c.check_id != "iam.tokens")

    # a stopped follower: its health fails, the others' writes cannot be read back on it,
    # tokens cannot be verified there, and Prometheus reports its targets down
    view = await lab.probe()
    dead = next(n for n in nodes if n != view.leader_node)
    lab.backend.stop_node(dead)
    results = await run_checks(target)
    alive = [n for n in nodes if n != dead]
    health = evidence(results, "health")
    assert not health[dead][0] and "cannot connect" in health[dead][1]
    assert all(health[n][0] for n in alive)
    for check_id in ("chainfire.crud", "flaredb.crud"):
        for n in alive:
            ok, text = evidence(results, check_id)[n]
            assert not ok and "read on 2/3 nodes" in text and dead in text, (check_id, text)
    before_dead = nodes[(nodes.index(dead) - 1) % len(nodes)]  # its token goes to `dead`
    ok, text = evidence(results, "iam.tokens")[before_dead]
    assert not ok and f"{dead} chainfire: token UNAVAILABLE" in text, text
    for n in alive:
        ok, text = evidence(results, "chainfire.leader")[n]
        assert not ok and text.endswith("(not agreed)"), text
        ok, text = evidence(results, "flaredb.quorum")[n]
        assert ok and "2/3 voters reachable" in text, text  # a majority still
    assert not evidence(results, "flaredb.quorum")[dead][0]
    assert "ClientConnectorError" in evidence(results, "metrics")[dead][1]
    prom = evidence(results, "prometheus")
    assert not prom[dead][0] and "chainfire down" in prom[dead][1], prom[dead]
    assert all(prom[n][0] for n in alive), prom

    # the stopped node removed from Chainfire's membership: the survivors list 2 members
    member_id = next(v.member_id for v in view.nodes if v.node_id == dead)
    cfg = next(c for c in lab.configs() if c.node_id == alive[0])
    async with dial(client_target(cfg), lab.operator_tls) as channel:
        await rpc_pb2_grpc.ClusterStub(channel).MemberRemove(
            rpc_pb2.MemberRemoveRequest(ID=member_id), timeout=10
        )
    results = await run_checks(target)
    members = evidence(results, "chainfire.members")
    for n in alive:
        ok, text = members[n]
        assert not ok and text.startswith("2 members:") and dead not in text, text
