"""Every template under provision/templates on its own: what it renders for the seed's
sample cluster, shell scripts that `bash -n` and `dash -n` accept, Nix that parses, and
StrictUndefined refusing a missing variable. (test_render.py compares whole rendered
trees with golden files; this file is about the templates themselves.)"""

from __future__ import annotations

import ast
import subprocess
from importlib.resources import files
from pathlib import Path

import jinja2
import pytest
import yaml

from plasmacloud.provision import deploy, image, ipxe, nix, runbook, sample
from plasmacloud.provision.render import python_dependencies
from plasmacloud.provision.spec import ClusterSpec, parse_spec
from plasmacloud.provision.templating import render_template

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyForTheTemplateTests op@host"


def _seed() -> ClusterSpec:
    spec, issues = parse_spec(sample.sample_spec(KEY))
    assert issues == []
    return spec


def _renderings() -> dict[str, str]:
    """Each template's text for the seed cluster, rendered through the function that
    uses it (so the variables are the ones the code passes)."""
    spec = _seed()
    node = spec.nodes[0]
    return {
        "image-init.sh.j2": image.init_script(),
        "image-plasma.py.j2": image.plasma_script(),
        "image-udhcpc.sh.j2": render_template("image-udhcpc.sh.j2"),
        "image-lvm.conf.j2": render_template("image-lvm.conf.j2"),
        "target-facts.sh.j2": render_template("target-facts.sh.j2"),
        "cluster.yaml.j2": sample.sample_spec(KEY),
        "nix-configuration.nix.j2": nix.configuration_nix(spec, node),
        "nix-disko.nix.j2": nix.disko_nix(spec, node),
        "nix-module.nix.j2": nix.module_nix(),
        "nix-flake.nix.j2": nix.flake_nix(spec, python_dependencies()),
        "runbook.md.j2": runbook.runbook(spec),
        "ipxe-chain.ipxe.j2": ipxe.chain_script(spec),
        "ipxe-node.ipxe.j2": ipxe.node_script(spec, node),
        "ipxe-unknown.ipxe.j2": ipxe.unknown_script("52:54:00:12:34:56"),
        "systemd-unit.service.j2": deploy.systemd_unit("chainfire", "chainfire"),
    }


RENDERED = _renderings()
SHELL = [name for name in RENDERED if name.endswith(".sh.j2")]
NIX = [name for name in RENDERED if name.endswith(".nix.j2")]


def test_every_template_file_is_rendered_here_and_nothing_else() -> None:
    on_disk = {p.name for p in (files("plasmacloud.provision") / "templates").iterdir()}
    assert on_disk == set(RENDERED)


@pytest.mark.parametrize("name", SHELL)
@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_shell_templates_parse(name: str, shell: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text(RENDERED[name])
    done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", NIX)
def test_nix_templates_parse(name: str, tmp_path: Path) -> None:
    path = tmp_path / "file.nix"
    path.write_text(RENDERED[name])
    done = subprocess.run(
        ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_image_init_names_the_units_dir_and_node_ctl() -> None:
    init = RENDERED["image-init.sh.j2"]
    assert init.startswith("#!/bin/sh\n") and init.endswith("while true; do sleep 3600; done\n")
    assert f"  units={image.VM_UNITS_DIR}\n" in init
    node_ctl = "/opt/python/bin/python3 -m plasmacloud.lab.node_ctl --dir /run/plasmacloud"
    assert f"  {node_ctl} start $preload $names && say" in init
    assert "{{" not in init and "@UNITS@" not in init


def test_image_plasma_is_python_with_the_image_interpreter() -> None:
    text = RENDERED["image-plasma.py.j2"]
    assert text.splitlines()[0] == "#!/opt/python/bin/python3"
    ast.parse(text)


def test_sample_cluster_yaml_is_the_seed_three_nodes_with_the_key() -> None:
    doc = yaml.safe_load(RENDERED["cluster.yaml.j2"])
    assert doc["ssh_authorized_keys"] == [KEY]
    assert [n["node_id"] for n in doc["nodes"]] == ["node01", "node02", "node03"]
    assert [n["ip"] for n in doc["nodes"]] == [f"192.168.100.1{i}" for i in (1, 2, 3)]


def test_nix_configuration_carries_the_nodes_addresses_and_keys() -> None:
    text = RENDERED["nix-configuration.nix.j2"]
    assert text.startswith(nix.HEADER + "# Node node01 (192.168.100.11, 52:54:00:00:01:01)")
    assert '    "192.168.100.12" = [ "node02" "node02.lab.local" ];\n' in text
    assert f"    {nix.nix_str(KEY)}\n" in text
    assert '  networking.domain = "lab.local";\n' in text
    assert "    iam.enable = true;\n" in text


def test_ipxe_and_systemd_unit_for_the_seed() -> None:
    assert (
        "chain http://192.168.100.1:8080/ipxe/${mac:hexhyp}.ipxe" in RENDERED["ipxe-chain.ipxe.j2"]
    )
    node = RENDERED["ipxe-node.ipxe.j2"].splitlines()
    assert node[2].startswith("kernel http://192.168.100.1:8080/boot/node01/kernel initrd=")
    assert "refusing to install" in RENDERED["ipxe-unknown.ipxe.j2"]
    unit = RENDERED["systemd-unit.service.j2"]
    assert f"ExecStart={deploy.VENV}/bin/plasma chainfire serve --config" in unit


def test_runbook_lists_every_node() -> None:
    text = RENDERED["runbook.md.j2"]
    for n in _seed().nodes:
        assert f"| {n.node_id} | {n.host} | {n.ip} | {n.mac} |" in text
    assert "Raft tolerates 1 failure(s)." in text


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("image-init.sh.j2", {"units_dir": "/run/plasmacloud"}),  # no node_ctl
        ("image-plasma.py.j2", {}),
        ("ipxe-unknown.ipxe.j2", {}),
        ("systemd-unit.service.j2", {"service": "x", "command": "x", "venv": "/v"}),
    ],
)
def test_strict_undefined_refuses_a_missing_variable(name: str, values: dict[str, str]) -> None:
    with pytest.raises(jinja2.UndefinedError):
        render_template(name, **values)
