"""`plasma validate --spec cluster.yaml` against real-looking addresses: a netns lab
(nodes at 10.x.y.11-13 inside namespaces the lab created) described by a cluster.yaml
whose nodes are those addresses. Nothing outside the lab's own network is dialled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from plasmacloud.iam.bootstrap import Outcome
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import scratch_netns_spec
from plasmacloud.lab.services import SERVICES
from plasmacloud.provision import pki
from plasmacloud.provision.sample import sample_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def netns_lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab.open(tmp_path / "lab", scratch_netns_spec(), services=SERVICES, backend="netns")
    try:
        lab.up()
        asyncio.run(lab.wait_ready(timeout=90))
        assert lab.iam_bootstrap == Outcome.CREATED  # waiting for ready bootstrapped IAM
        yield lab
    finally:
        lab.down()


def spec_for(lab: Lab, path: Path) -> Path:
    """The seed's sample cluster.yaml moved onto the lab's subnet."""
    seed_prefix = "192.168.100."
    lab_prefix = str(lab.spec.ip_of("node01")).rsplit(".", 1)[0] + "."
    path.write_text(sample_spec().replace(seed_prefix, lab_prefix))
    return path


def test_validate_spec_is_green_on_the_netns_lab_and_red_with_a_foreign_ca(
    netns_lab: Lab, tmp_path: Path
) -> None:
    layout = netns_lab.layout
    spec = spec_for(netns_lab, tmp_path / "cluster.yaml")
    base = ["validate", "--spec", str(spec), "--out", str(tmp_path / "out")]
    creds = ["--cert", str(layout.operator_cert), "--key", str(layout.operator_key)]
    creds += ["--admin-credentials", str(layout.admin_credentials)]
    junit = tmp_path / "report.xml"
    runner = CliRunner()

    ok = runner.invoke(
        app, [*base, *creds, "--cacert", str(layout.ca_file), "--json", "--junit", str(junit)]
    )
    assert ok.exit_code == EXIT_OK, ok.output
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True
    ids = {c["id"] for c in doc["checks"]}
    assert {"flaredb.crud", "iam.tokens", "prometheus"} <= ids
    quorum = next(c for c in doc["checks"] if c["id"] == "flaredb.quorum")
    assert all("3/3 voters reachable" in n["evidence"] for n in quorum["nodes"])
    assert junit.read_text().startswith("<?xml")

    # no render tree here: the default CA path is missing, said before dialling anything
    missing = runner.invoke(app, [*base, *creds])
    assert missing.exit_code == EXIT_USAGE
    assert f"missing {tmp_path / 'out' / 'pki' / 'ca.crt'}" in missing.output

    # a CA that did not sign the nodes' certificates: every TLS check fails, exit 1
    pki.init_ca(tmp_path / "other")
    other = ["--cacert", str(tmp_path / "other" / "ca.crt")]
    bad = runner.invoke(app, [*base, *creds, *other, "--json"])
    assert bad.exit_code == EXIT_FAILURE, bad.output
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False
    crud = next(c for c in doc["checks"] if c["id"] == "flaredb.crud")
    assert all("CERTIFICATE_VERIFY_FAILED" in n["evidence"] for n in crud["nodes"]), crud
