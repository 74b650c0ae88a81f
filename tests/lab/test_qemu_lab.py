"""Every `plasma lab` command on a QEMU lab directory goes through the one lab surface
(lab/qemu_lab.py), without VMs: what talks to the cluster re-runs itself inside the lab
namespace, power and consoles are driven from here, and what a VM cannot do is refused
naming the backend."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.cluster.probe import ClusterView, NodeView
from plasmacloud.common.errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from plasmacloud.lab import qemu_lab
from plasmacloud.lab.control import Lab
from plasmacloud.lab.qemu import QemuBackend
from plasmacloud.lab.spec import LabSpec
from plasmacloud.provision.states import NodeStatus, State, StateFile

from .qemu_lab import prepared_qemu_lab

runner = CliRunner()
NODES = ("node01", "node02", "node03")


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def lab(tmp_path: Path) -> QemuBackend:
    return prepared_qemu_lab(tmp_path / "lab")


@pytest.fixture
def relayed(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The command lines run in the lab namespace (each exits 3, as a cluster not ready)."""
    runs: list[list[str]] = []

    def run(
        argv: list[str], check: bool, pass_fds: tuple[int, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        runs.append(argv)
        return subprocess.CompletedProcess(argv, EXIT_UNAVAILABLE)

    monkeypatch.setattr(qemu_lab.subprocess, "run", run)
    monkeypatch.setattr(qemu_lab, "plasma_executable", lambda: "plasma")
    monkeypatch.setattr(qemu_lab, "namespace_exists", lambda _ns: True)  # the lab is up
    return runs


@pytest.mark.parametrize(
    ("args", "inside"),
    [
        (["lab", "status", "--json"], ["lab", "status", "--json"]),
        (
            ["lab", "validate", "--persistence", "--check", "health"],
            ["lab", "validate", "--wait", "0.0", "--check", "health", "--persistence"],
        ),
        (
            ["lab", "qemu", "validate", "--wait", "900", "--json"],
            ["lab", "validate", "--wait", "900.0", "--json"],
        ),
        (
            ["lab", "chaos", "--seed", "7", "--faults", "kill,power"],
            ["lab", "chaos", "--duration", "60s", "--seed", "7", "--faults", "kill,power"],
        ),
        (["lab", "bootstrap-iam", "--wait", "5"], ["lab", "bootstrap-iam", "--wait", "5.0"]),
        (["lab", "qemu", "status"], ["lab", "status"]),
        (["lab", "restore", "/backup"], ["lab", "restore", "/backup"]),
        (["cluster", "backup", "--out", "/backup"], ["cluster", "backup", "--out", "/backup"]),
    ],
)
def test_commands_that_reach_the_cluster_run_again_inside_the_lab_namespace(
    lab: QemuBackend, relayed: list[list[str]], args: list[str], inside: list[str]
) -> None:
    root = str(lab.paths.root)
    result = runner.invoke(app, [*args, "--dir", root])
    assert result.exit_code == EXIT_UNAVAILABLE, result.output  # the inner command's
    assert relayed == [
        ["ip", "netns", "exec", lab.names.namespace, "plasma", *inside, "--dir", root, "--inside"]
    ]


@pytest.mark.parametrize("command", ["status", "validate", "chaos", "bootstrap-iam"])
def test_a_qemu_lab_that_is_not_up_is_said_to_be_so(lab: QemuBackend, command: str) -> None:
    result = runner.invoke(app, ["lab", command, "--dir", str(lab.paths.root)])
    assert result.exit_code == EXIT_UNAVAILABLE, result.output
    assert "is not up; `plasma lab up --backend qemu`" in _flat(result.output)


def _ready_view() -> ClusterView:
    health = {"chainfire": (True, "ok")}
    nodes = [
        NodeView(n, health, member_id=i + 1, leader_id=2, raft_term=4, members=list(NODES))
        for i, n in enumerate(NODES)
    ]
    return ClusterView(nodes, expected_members=3)


def test_status_inside_reports_vms_provisioning_and_the_cluster(
    lab: QemuBackend, relayed: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def probe(*_args: Any) -> ClusterView:
        return _ready_view()

    joined: list[list[str]] = []
    monkeypatch.setattr(qemu_lab, "probe_cluster", probe)
    monkeypatch.setattr(QemuBackend, "mark_joined", lambda _s, nodes, _n: joined.append(nodes))
    root = str(lab.paths.root)
    result = runner.invoke(app, ["lab", "status", "--dir", root, "--inside", "--json"])
    assert result.exit_code == EXIT_OK, result.output
    doc = json.loads(result.output)
    assert doc["backend"] == "qemu" and doc["ready"] is True and doc["leader"] == "node02"
    assert [(n["node"], n["vm"]) for n in doc["nodes"]] == [(n, False) for n in NODES]
    assert joined == [list(NODES)]  # the ready cluster's nodes are recorded as joined
    table = runner.invoke(app, ["lab", "status", "--dir", root, "--inside"])
    assert table.exit_code == EXIT_OK
    assert "probed inside the lab namespace" in _flat(table.output)
    assert relayed == []  # already inside: nothing re-run


def test_start_stop_kill_power_the_vm(lab: QemuBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[tuple[str, str]] = []
    for op in ("start_node", "stop_node", "kill_node", "reset_node"):
        monkeypatch.setattr(QemuBackend, op, lambda _s, node, *_a, op=op: done.append((op, node)))
    root = str(lab.paths.root)
    for args in (["start"], ["stop"], ["kill"], ["qemu", "power"]):
        node = ["node02", "reset"] if args == ["qemu", "power"] else ["node02"]
        result = runner.invoke(app, ["lab", *args, *node, "--dir", root])
        assert result.exit_code == EXIT_OK, result.output
    assert done == [
        ("start_node", "node02"),
        ("stop_node", "node02"),
        ("kill_node", "node02"),
        ("reset_node", "node02"),
    ]


def test_an_unknown_vm_is_a_usage_error(lab: QemuBackend) -> None:
    result = runner.invoke(app, ["lab", "start", "node09", "--dir", str(lab.paths.root)])
    assert result.exit_code == EXIT_USAGE
    assert "no node 'node09'" in _flat(result.output)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["kill", "node01", "-s", "STOP"], "--signal SIGSTOP with --backend qemu"),
        (["logs", "node01", "--service", "flaredb"], "--service with --backend qemu"),
        (["partition", "node01", "--from", "node02"], "this lab runs qemu"),
        (["heal"], "this lab runs qemu"),
        (["add-node", "node04"], "add-node NODE with --backend qemu"),
        (["remove-node", "node01"], "remove-node with --backend qemu"),
        (["up", "--backend", "netns"], "holds a qemu lab, not a netns one"),
        (["up", "--scratch"], "--scratch with --backend qemu"),
    ],
)
def test_what_a_qemu_lab_cannot_do_is_refused_naming_it(
    lab: QemuBackend, relayed: list[list[str]], args: list[str], said: str
) -> None:
    result = runner.invoke(app, ["lab", *args, "--dir", str(lab.paths.root)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert said in _flat(result.output)
    assert relayed == []


def test_a_process_lab_is_not_opened_as_a_qemu_one(tmp_path: Path) -> None:
    Lab.open(tmp_path, LabSpec()).prepare()
    for args in (["up", "--backend", "qemu"], ["qemu", "status"]):
        result = runner.invoke(app, ["lab", *args, "--dir", str(tmp_path)])
        assert result.exit_code == EXIT_USAGE, result.output
        assert "holds a process lab, not a qemu one" in _flat(result.output)


def _installs(monkeypatch: pytest.MonkeyPatch, state: State) -> list[str]:
    """The VMs' bring-up replaced: each step is recorded; every node reaches ``state``."""
    steps: list[str] = []

    def up(self: QemuBackend) -> None:
        steps.append("up")
        self.state.image_key = "k"
        self.state.timings["image_s"] = 0.0

    monkeypatch.setattr(QemuBackend, "up", up)
    monkeypatch.setattr(QemuBackend, "down", lambda _s: steps.append("down"))
    monkeypatch.setattr(QemuBackend, "wipe", lambda _s: steps.append("wipe"))
    reading = StateFile(
        nodes={n: NodeStatus(node_id=n, mac="52:54:00:00:00:01", state=state) for n in NODES}
    )
    monkeypatch.setattr(QemuBackend, "provisioning", lambda _s: reading)
    return steps


def test_up_on_qemu_honours_wipe_and_timeout(
    lab: QemuBackend, relayed: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = _installs(monkeypatch, State.INSTALLING)
    root = str(lab.paths.root)
    result = runner.invoke(app, ["lab", "up", "--wipe", "--timeout", "0", "--dir", root])
    assert result.exit_code == EXIT_UNAVAILABLE, result.output
    assert "not installed" in _flat(result.output)
    assert steps == ["down", "wipe", "up"]
    assert relayed == []  # never installed: nothing to bootstrap or validate


def test_up_on_qemu_bootstraps_then_validates_inside_with_every_checklist_flag(
    lab: QemuBackend, relayed: list[list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    steps = _installs(monkeypatch, State.INSTALLED)
    root = str(lab.paths.root)
    monkeypatch.setattr(qemu_lab.subprocess, "run", _exits(relayed, [EXIT_OK, EXIT_USAGE]))
    junit = tmp_path / "r.xml"
    args = ["--validate", "--persistence", "--junit", str(junit), "--timeout", "100"]
    result = runner.invoke(app, ["lab", "up", "--backend", "qemu", *args, "--dir", root])
    assert result.exit_code == EXIT_USAGE, result.output  # the validation's exit code
    assert steps == ["up"]
    assert "all installed" in _flat(result.output)
    inner = [argv[5:8] for argv in relayed]
    assert inner == [["lab", "bootstrap-iam", "--wait"], ["lab", "validate", "--wait"]]
    assert relayed[1][9:13] == ["--junit", str(junit), "--persistence", "--dir"]


def _exits(runs: list[list[str]], codes: list[int]) -> Any:
    """subprocess.run recording each command line and exiting with ``codes`` in turn."""

    def run(
        argv: list[str], check: bool, pass_fds: tuple[int, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        runs.append(argv)
        return subprocess.CompletedProcess(argv, codes[len(runs) - 1])

    return run
