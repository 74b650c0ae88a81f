"""Deploy drivers: exact command lines, staged secrets with modes, validation, CLI."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from plasmacloud.provision import deploy, nixos_anywhere
from plasmacloud.provision.findings import has_errors
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.spec import ClusterSpec, SSHTarget, parse_spec
from plasmacloud.provision.target import TargetFacts

from .helpers import run_plasma


def _spec(tree: Path) -> ClusterSpec:
    return parse_spec((tree / "cluster.yaml").read_text())[0]


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> tuple[int, str]:
        self.calls.append(list(argv))
        if self.fail_on and self.fail_on in " ".join(argv):
            return 1, "Connection refused"
        return 0, ""


def test_nixos_anywhere_exact_command(tree: Path) -> None:
    spec, out = _spec(tree), OutputLayout(tree / "out")
    node = spec.node("node02")
    assert nixos_anywhere.command(spec, out, node) == [
        "nixos-anywhere",
        "--flake",
        f"{tree / 'out'}#node02",
        "--extra-files",
        str(tree / "out" / ".stage" / "node02"),
        "--chown",
        "/etc/nixos/secrets",
        "0:0",
        "--generate-hardware-config",
        "nixos-generate-config",
        str(tree / "out" / "node02" / "hardware-configuration.nix"),
        "--ssh-port",
        "2202",
        "root@127.0.0.1",
    ]
    assert nixos_anywhere.flake_ref(Path("out")) == "./out"


def test_stage_has_final_modes_and_drops_stale_files(tree: Path) -> None:
    out = OutputLayout(tree / "out")
    node = _spec(tree).node("node01")
    stage = deploy.stage_secrets(out, node)
    secrets = stage / "etc" / "nixos" / "secrets"
    assert stat.S_IMODE((secrets / "node01.key").stat().st_mode) == 0o400
    assert stat.S_IMODE((secrets / "ca.crt").stat().st_mode) == 0o644
    assert stat.S_IMODE(stage.stat().st_mode) == 0o700
    (out.secrets_dir("node01") / "node01.crt").rename(out.secrets_dir("node01") / "old.crt")
    deploy.stage_secrets(out, node)
    assert not (secrets / "node01.crt").exists() and (secrets / "old.crt").exists()


def test_deploy_node_runs_commands_and_names_failures(tree: Path) -> None:
    spec, out = _spec(tree), OutputLayout(tree / "out")
    rec = Recorder()
    lines = deploy.deploy_node(deploy.driver("nixos-anywhere"), spec, out, spec.nodes[0], rec)
    assert rec.calls == [nixos_anywhere.command(spec, out, spec.nodes[0])]
    assert lines[0].startswith("nixos-anywhere --flake")
    pkg = tree / "plasmacloud-0.1.0-py3-none-any.whl"
    ssh = deploy.driver("ssh", package=pkg)
    with pytest.raises(deploy.DeployError, match=r"node03: `ssh .*pip install"):
        deploy.deploy_node(ssh, spec, out, spec.nodes[2], Recorder(fail_on="pip install"))


def test_ssh_driver_stages_units_and_ships_them_with_tar(tree: Path) -> None:
    spec, out = _spec(tree), OutputLayout(tree / "out")
    node = spec.node("node02")
    drv = deploy.driver("ssh", package=Path("/tmp/plasmacloud.whl"))
    stage = drv.stage(out, node)
    unit = (stage / "etc/systemd/system/plasmacloud-flaredb.service").read_text()
    assert "ExecStart=/opt/plasmacloud/bin/plasma flaredb serve --config " in unit
    cmds = drv.commands(spec, out, node)
    assert cmds[0][-1] == "root@127.0.0.1:/tmp/plasmacloud.whl" and "2202" in cmds[0]
    assert cmds[1][:2] == ["sh", "-c"] and "tar -C / --no-same-owner -xpf -" in cmds[1][2]
    assert cmds[-1][-4:] == [
        "--now",
        "plasmacloud-chainfire",
        "plasmacloud-flaredb",
        "plasmacloud-iam",
    ]
    with pytest.raises(deploy.DeployError, match="--package"):
        deploy.driver("ssh").commands(spec, out, node)
    with pytest.raises(deploy.DeployError, match="unknown deploy method"):
        deploy.driver("pxe")


def test_driver_validation_uses_method_requirements(tree: Path) -> None:
    spec = _spec(tree)
    debian_old = TargetFacts(
        mem_mb=1024,
        os_id="debian",
        kexec_load_disabled="0",
        python="3.9",
        systemd=True,
        block_devices=["/dev/vda"],
    )
    node = spec.nodes[0]
    ssh_ids = {f.id for f in deploy.driver("ssh").validate(spec, node, debian_old)}
    na_ids = {f.id for f in deploy.driver("nixos-anywhere").validate(spec, node, debian_old)}
    assert "PF065-python-missing" in ssh_ids and "PF061-ram-low" not in ssh_ids
    assert "PF061-ram-low" in na_ids and "PF065-python-missing" not in na_ids


def test_deploy_cli(tree: Path) -> None:
    args = ["-s", str(tree / "cluster.yaml"), "-o", str(tree / "out")]
    code, output = run_plasma("deploy", *args, "--dry-run", "-n", "node03")
    assert code == 0 and output.count("nixos-anywhere --flake") == 1 and "node03" in output
    assert (tree / "out/.stage/node03/etc/nixos/secrets/node03.key").exists()
    assert run_plasma("deploy", *args, "--dry-run", "-n", "node09")[0] == 2
    assert run_plasma("deploy", *args, "--method", "pxe", "--dry-run")[0] == 2
    if shutil.which("nixos-anywhere") is None:
        code, output = run_plasma("deploy", *args, "-n", "node01")
        assert code == 3 and "--dry-run" in output
    code, output = run_plasma("deploy", *args, "--method", "image", "--dry-run")
    assert code == 0 and "plasma netboot serve" in output and "52:54:00:00:01:03" in output


def test_target_findings_gathers_each_nodes_facts_for_the_driver(tree: Path) -> None:
    spec = _spec(tree)
    small = TargetFacts(mem_mb=512, os_id="debian", kexec_load_disabled="0", systemd=True)
    gathered = []

    class Recorded:
        def gather(self, target: SSHTarget) -> TargetFacts:
            gathered.append(target)
            return small

    nodes = spec.nodes[:2]
    findings = deploy.target_findings(deploy.driver("nixos-anywhere"), spec, nodes, Recorded())
    assert gathered == [n.target for n in nodes]
    low = [f for f in findings if f.id == "PF061-ram-low"]
    assert len(low) == 2 and has_errors(findings)
