"""Chaos against real machines from ``cluster.yaml`` over the ssh backend.

The machines are the netns nodes of :mod:`.ssh_nodes` (an sshd in each namespace), running
Chainfire and FlareDB as node_ctl units started over SSH; the cluster.yaml puts the nodes
at those namespaces' addresses. The CLI tests dial only loopback.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plasmacloud.chaos.history import load_history
from plasmacloud.chaos.history_check import check_history
from plasmacloud.chaos.run import ChaosConfig, default_faults, parse_faults, run_chaos
from plasmacloud.cli import app
from plasmacloud.cluster.control import ClusterError
from plasmacloud.cluster.rolling import restart_order, rolling_restart
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import CHAINFIRE, FLAREDB
from plasmacloud.lab.ssh import SSHBackend
from plasmacloud.lab.ssh_target import ssh_preflight, ssh_target
from plasmacloud.provision import pki
from plasmacloud.provision.sample import sample_spec
from plasmacloud.provision.spec import load_spec
from plasmacloud.validate.spec_target import spec_configs

from .ssh_nodes import SSHNodes, lab_units, node_ctl_managers, ssh_nodes

SERVICES = ("chainfire", "flaredb")
READY_TIMEOUT_S = 90.0
SAMPLE_PREFIX = "192.168.100."
SAMPLE_SSH = re.compile(r"ssh: ssh://root@127\.0\.0\.1:220\d")


def cluster_yaml(path: Path, prefix: str, ssh: str | None) -> Path:
    """The seed's sample cluster.yaml with its nodes on ``prefix``.x and each node's ssh
    target replaced by ``ssh`` (``None``: root@<node ip>:22)."""
    text = sample_spec().replace(SAMPLE_PREFIX, prefix)
    text = SAMPLE_SSH.sub(f"ssh: {ssh}" if ssh else "", text)
    path.write_text(text)
    return path


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[SSHNodes]:
    """Three netns nodes with an sshd each; all gone afterwards."""
    with ssh_nodes(tmp_path) as n:
        yield n


@pytest.mark.slow
async def test_chaos_from_cluster_yaml_over_ssh_verifies_every_property(
    nodes: SSHNodes, tmp_path: Path
) -> None:
    lab = Lab.open(tmp_path / "lab", nodes.spec, services=(CHAINFIRE, FLAREDB), backend="netns")
    lab.prepare()  # node configs and certificates for the units; the lab starts nothing
    prefix = str(nodes.spec.ip_of("node01")).rsplit(".", 1)[0] + "."
    cluster = load_spec(cluster_yaml(tmp_path / "cluster.yaml", prefix, None))
    backend = SSHBackend.from_spec(cluster, nodes.options, services=SERVICES)
    assert backend.targets == nodes.targets  # the spec's nodes are where the sshds listen
    backend = replace(backend, managers=node_ctl_managers(lab_units(lab)))
    target = ssh_target(backend, spec_configs(cluster), lab.services, lab.operator_tls)
    assert default_faults(target) == "kill,restart,pause"
    with pytest.raises(ClusterError, match="refused on the ssh backend"):
        parse_faults("kill,partition", target)
    assert ssh_preflight(target) == [
        f"{n}: plasmacloud-chainfire inactive, plasmacloud-flaredb inactive; "
        "start them before a chaos run"
        for n in nodes.spec.node_ids
    ]
    try:
        await asyncio.to_thread(backend.up)
        await target.wait_ready(READY_TIMEOUT_S)
        assert await asyncio.to_thread(ssh_preflight, target) == []
        # seed 9 injects kill, pause, restart in that order; each SSH command takes
        # seconds on a loaded machine, so 35 s leaves room for the first two
        cfg = ChaosConfig(
            35, ("kill", "restart", "pause"), seed=9, gap_s=(0.5, 1.0), hold_s=(1.5, 2.5)
        )
        path = tmp_path / "history.jsonl"
        result = await run_chaos(target, cfg, path, say=lambda _m: None)
    finally:
        await asyncio.to_thread(backend.down)

    assert result.problems == []
    bad = [v for v in result.verdicts if v.status != "ok"]
    assert not bad, f"history {path}: {bad}"
    assert [v.status for v in result.verdicts] == ["ok", "ok", "ok"]
    assert {f.kind for f in result.faults} >= {"kill", "pause"}, result.faults
    for f in result.faults:
        assert f.ready is not None, f
        assert set(f.recovery_s) == {"chainfire", "flaredb"}, f
        assert all(t is not None for t in f.recovery_s.values()), f
    ops = result.history.ops
    assert sum(op.outcome == "ok" and op.kind == "write" for op in ops) > 50
    sets = {op.key for op in ops if op.kind == "read_set"}
    assert len(sets) == 2 and any(k.startswith("flaredb:") for k in sets)
    assert result.history.events, "the watch streams delivered nothing"
    assert result.history.meta["backend"] == "ssh"
    assert check_history(load_history(path)) == result.verdicts


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _unreachable_cluster(tmp_path: Path, closed_port: int) -> tuple[Path, Path]:
    """(cluster.yaml, out): nodes on a loopback /24, SSH at a refusing loopback port
    (nothing leaves the host), and placeholders for the TLS files the commands require."""
    spec = cluster_yaml(
        tmp_path / "cluster.yaml", "127.77.0.", f"ssh://root@127.0.0.1:{closed_port}"
    )
    out = tmp_path / "out"
    for rel in ("pki/ca.crt", "pki/clients/admin.crt", "pki/clients/admin.key"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("placeholder\n")
    return spec, out


def test_cli_chaos_spec_unreachable_node_exits_3_and_partition_is_refused(
    tmp_path: Path, closed_port: int
) -> None:
    spec, out = _unreachable_cluster(tmp_path, closed_port)  # TLS files never read
    base = ["chaos", "--spec", str(spec), "--out", str(out), "--duration", "5s", "--seed", "1"]
    runner = CliRunner()

    down = runner.invoke(app, base)
    assert down.exit_code == EXIT_UNAVAILABLE, down.output
    said = " ".join(down.output.split())
    for node in ("node01", "node02", "node03"):
        assert f"{node} (ssh://root@127.0.0.1:{closed_port})" in said
    assert "Connection refused" in said
    assert not (out / "chaos").exists()  # no run, no history

    refused = runner.invoke(app, [*base, "--faults", "kill,partition"])
    assert refused.exit_code == EXIT_USAGE, refused.output
    assert "refused on the ssh backend" in " ".join(refused.output.split())

    missing = runner.invoke(app, [*base, "--out", str(tmp_path / "nothing")])
    assert missing.exit_code == EXIT_USAGE
    assert "missing" in missing.output

    helped = runner.invoke(app, ["chaos", "--help"])
    assert helped.exit_code == EXIT_OK
    assert "--spec" in helped.output and "--replay" in helped.output


@pytest.mark.slow
async def test_rolling_restart_of_the_spec_machines_over_ssh(
    nodes: SSHNodes, tmp_path: Path
) -> None:
    """`plasma cluster rolling-restart --spec`'s target (the spec's nodes, their units
    over SSH): every member restarted once (a new process), followers first, the leader
    last, the cluster ready after each."""
    lab = Lab.open(tmp_path / "lab", nodes.spec, services=(CHAINFIRE, FLAREDB), backend="netns")
    lab.prepare()
    prefix = str(nodes.spec.ip_of("node01")).rsplit(".", 1)[0] + "."
    cluster = load_spec(cluster_yaml(tmp_path / "cluster.yaml", prefix, None))
    units = lab_units(lab)
    backend = replace(
        SSHBackend.from_spec(cluster, nodes.options, services=SERVICES),
        managers=node_ctl_managers(units),
    )
    target = ssh_target(backend, spec_configs(cluster), lab.services, lab.operator_tls)

    def pids() -> dict[str, str]:
        return {n: (d / "plasmacloud-chainfire.pid").read_text() for n, d in units.items()}

    try:
        await asyncio.to_thread(backend.up)
        await target.wait_ready(READY_TIMEOUT_S)
        before, leader = pids(), (await target.probe()).leader_node
        done = await rolling_restart(target, READY_TIMEOUT_S, lambda _step: None)
        after = pids()
        assert (await target.probe()).ready
    finally:
        await asyncio.to_thread(backend.down)
    assert [d.node_id for d in done] == restart_order(sorted(units), leader)
    assert [d.was_leader for d in done] == [False, False, True]
    assert all(after[n] != before[n] for n in units), (before, after)
    print("restarted over SSH:", ", ".join(f"{d.node_id} {d.seconds:.1f} s" for d in done))


def test_cli_rolling_restart_spec_refuses_a_cluster_that_does_not_answer(
    tmp_path: Path, closed_port: int
) -> None:
    spec, out = _unreachable_cluster(tmp_path, closed_port)
    base = ["cluster", "rolling-restart", "--spec", str(spec), "--out", str(out)]
    runner = CliRunner()
    placeholders = runner.invoke(app, base)
    assert placeholders.exit_code == EXIT_USAGE, placeholders.output
    assert "do not load" in " ".join(placeholders.output.split())
    (out / "pki" / "ca.crt").unlink()  # real files in the placeholders' place
    ca = pki.init_ca(out / "pki")
    pki.issue_client(ca, out / "pki" / "clients", "admin")
    down = runner.invoke(app, [*base, "--timeout", "5"])
    assert down.exit_code == EXIT_FAILURE, down.output
    assert "not healthy" in " ".join(down.output.split())  # refused before anything stops
    missing = runner.invoke(app, [*base, "--out", str(tmp_path / "nothing")])
    assert missing.exit_code == EXIT_USAGE and "missing" in missing.output
