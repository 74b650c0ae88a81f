"""`plasma lab` commands that need no running cluster: env, errors and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.cli._common import open_lab
from plasmacloud.common.errors import EXIT_USAGE
from plasmacloud.lab.control import Lab
from plasmacloud.lab.spec import DEFAULT_FIRST_IP, LabSpec, busy_ports

runner = CliRunner()


def _flat(text: str) -> str:
    """Output with Rich's line wrapping undone."""
    return " ".join(text.split())


def test_env_prints_etcdctl_exports_for_the_labs_addresses(tmp_path: Path) -> None:
    Lab.open(tmp_path, LabSpec()).prepare()  # default spec: 127.0.0.11-13, TLS
    result = runner.invoke(app, ["lab", "env", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "export ETCDCTL_API=3" in lines
    assert (
        "export ETCDCTL_ENDPOINTS=https://127.0.0.11:2379,https://127.0.0.12:2379,"
        "https://127.0.0.13:2379"
    ) in lines
    assert f"export ETCDCTL_CACERT={tmp_path.resolve()}/pki/ca.crt" in lines
    assert f"export ETCDCTL_CERT={tmp_path.resolve()}/pki/operator.crt" in lines
    assert f"export ETCDCTL_KEY={tmp_path.resolve()}/pki/operator.key" in lines


def test_env_follows_plasma_lab_dir_and_a_saved_plain_spec(tmp_path: Path) -> None:
    Lab.open(tmp_path, LabSpec(tls=False)).prepare()
    result = runner.invoke(app, ["lab", "env"], env={"PLASMA_LAB_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "ETCDCTL_ENDPOINTS=http://127.0.0.11:2379" in result.output
    assert "ETCDCTL_CACERT" not in result.output


def test_status_without_a_lab_says_how_to_start_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "status", "--dir", str(tmp_path / "none")])
    assert result.exit_code == EXIT_USAGE
    assert "plasma lab up" in _flat(result.output)


def test_node_commands_reject_unknown_nodes_and_signals(tmp_path: Path) -> None:
    Lab.open(tmp_path, LabSpec(tls=False)).prepare()
    result = runner.invoke(app, ["lab", "stop", "node09", "--dir", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE
    assert "no node 'node09'" in _flat(result.output)
    result = runner.invoke(app, ["lab", "kill", "node01", "-s", "BOGUS", "--dir", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE
    assert "unknown signal" in _flat(result.output)


def test_down_of_an_idle_lab_is_a_noop_and_wipe_clears_it(tmp_path: Path) -> None:
    Lab.open(tmp_path, LabSpec(tls=False)).prepare()
    result = runner.invoke(app, ["lab", "down", "--wipe", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "stopped 0 process(es), wiped" in _flat(result.output)
    assert not (tmp_path / "lab.json").exists()
    assert not (tmp_path / "node01").exists()


def test_logs_prints_the_tail_of_a_nodes_service_log(tmp_path: Path) -> None:
    lab = Lab.open(tmp_path, LabSpec(tls=False))
    lab.prepare()
    log = lab.layout.log_path("node02", "chainfire")
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    result = runner.invoke(
        app, ["lab", "logs", "node02", "--service", "chainfire", "-n", "2", "--dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert result.output == "line 8\nline 9\n"
    missing = runner.invoke(
        app, ["lab", "logs", "node02", "--service", "nope", "--dir", str(tmp_path)]
    )
    assert missing.exit_code == EXIT_USAGE
    assert "does not exist" in _flat(missing.output)


def test_scratch_gives_only_a_new_lab_a_random_free_loopback_range(tmp_path: Path) -> None:
    new = open_lab(tmp_path / "new", scratch=True)
    assert new.spec.first_ip != DEFAULT_FIRST_IP
    assert new.spec.first_ip.is_loopback
    assert busy_ports(new.spec) == []
    Lab.open(tmp_path / "old", LabSpec(tls=False)).prepare()
    assert open_lab(tmp_path / "old", scratch=True).spec == LabSpec(tls=False)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--backend", "qemu", "--scratch"], "--scratch with --backend qemu"),
        (["--backend", "qemu", "--json"], "--json with --backend qemu"),
        (["--backend", "qemu", "--persistence"], "--persistence is part of the checklist"),
        (["--junit", "r.xml"], "--junit is part of the checklist: add --validate"),
    ],
)
def test_lab_up_refuses_a_flag_it_cannot_honour_by_name(
    tmp_path: Path, args: list[str], said: str
) -> None:
    """Every `lab up` flag works on every backend or is refused before anything starts."""
    result = runner.invoke(app, ["lab", "up", "--dir", str(tmp_path / "lab"), *args])
    assert result.exit_code == EXIT_USAGE, result.output
    assert said in _flat(result.output)
    assert not (tmp_path / "lab").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["ssh", "node01"], "`plasma lab ssh` with --backend process"),
        (["partition", "node01", "--from", "node02"], "this lab runs process"),
        (["heal"], "this lab runs process"),
        (["up", "--backend", "netns"], "holds a process lab, not a netns one"),
    ],
)
def test_what_a_process_lab_cannot_do_is_refused_naming_it(
    tmp_path: Path, args: list[str], said: str
) -> None:
    Lab.open(tmp_path, LabSpec(tls=False)).prepare()
    result = runner.invoke(app, ["lab", *args, "--dir", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert said in _flat(result.output)
