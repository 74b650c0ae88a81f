"""Rendering: golden files for the seed's cluster, determinism, re-run safety, Nix parses.

Regenerate the golden files after an intended change with
``PLASMA_UPDATE_GOLDEN=1 pytest tests/provision/test_render.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from plasmacloud.common.config import NodeConfig
from plasmacloud.provision.nix import nix_str
from plasmacloud.provision.render import render, render_files
from plasmacloud.provision.sample import sample_spec
from plasmacloud.provision.spec import ClusterSpec, SpecError, parse_spec

from .helpers import run_plasma

GOLDEN = Path(__file__).parent / "golden" / "seed"
# Files that depend only on the provisioning code and the spec (cluster-config.json
# and flake.nix also depend on the shared config model and the package's metadata).
GOLDEN_FILES = [
    "node01/configuration.nix",
    "node01/disko.nix",
    "node03/configuration.nix",
    "modules/plasmacloud.nix",
    "hosts",
    "dnsmasq.conf",
    "ipxe/boot.ipxe",
    "ipxe/52-54-00-00-01-02.ipxe",
    "RUNBOOK.md",
]


def _seed() -> ClusterSpec:
    spec, issues = parse_spec(sample_spec())
    assert issues == []
    return spec


def _variant() -> ClusterSpec:
    """Multi-disk by-id node, a worker, no domain, quotes in names that need escaping."""
    text = (
        sample_spec()
        .replace("domain: lab.local", "domain: null")
        .replace(
            "    disks:\n      - device: /dev/vda\n",
            "    disks:\n      - device: /dev/sda\n"
            "        by_id: /dev/disk/by-id/ata-QEMU_HARDDISK_QM00001\n"
            "      - device: /dev/sdb\n",
            1,
        )
        .replace(
            "role: control-plane\n    bootstrap: true\n    ssh: ssh://root@127.0.0.1:2203",
            "role: worker\n    bootstrap: false\n    ssh: ssh://root@127.0.0.1:2203",
        )
    )
    spec, issues = parse_spec(text)
    assert issues == []
    return spec


@pytest.mark.parametrize("rel", GOLDEN_FILES)
def test_golden_seed_cluster(rel: str) -> None:
    text = render_files(_seed())[rel]
    golden = GOLDEN / rel
    if os.environ.get("PLASMA_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_cluster_config_matches_spec_and_tls_names() -> None:
    files = render_files(_seed())
    for i in (1, 2, 3):
        cfg = NodeConfig.model_validate_json(files[f"node0{i}/secrets/cluster-config.json"])
        assert cfg.node_id == f"node0{i}" and str(cfg.ip) == f"192.168.100.1{i}"
        assert str(cfg.tls.ca_file) == "/etc/nixos/secrets/ca.crt"
        assert str(cfg.tls.cert_file) == f"/etc/nixos/secrets/node0{i}.crt"
        assert str(cfg.tls.key_file) == f"/etc/nixos/secrets/node0{i}.key"
        assert [p.node_id for p in cfg.peers] == ["node01", "node02", "node03"]
        assert cfg.bootstrap
        # Every peer hostname resolves from the config alone (the seed's Raft failure).
        for p in cfg.peers:
            assert cfg.resolve(p.hostname) == str(p.ip)
        assert (
            '"title": "PlasmaCloud cluster-config.json"'
            in (files[f"node0{i}/secrets/cluster-config.schema.json"])
        )


def test_plain_layout_has_no_lvm() -> None:
    disko = render_files(_plain())["node02/disko.nix"]
    assert "lvm" not in disko and 'mountpoint = "/var/lib/plasmacloud";' in disko


def test_published_schema_validates_rendered_configs() -> None:
    files = render_files(_seed())
    schema = json.loads(files["node01/secrets/cluster-config.schema.json"])
    validator = jsonschema.Draft202012Validator(schema)
    for i in (1, 2, 3):
        validator.validate(json.loads(files[f"node0{i}/secrets/cluster-config.json"]))
    broken = json.loads(files["node01/secrets/cluster-config.json"])
    broken["tls"]["cert_file"] = 42
    broken["typo"] = True
    errors = {e.json_path for e in validator.iter_errors(broken)}
    assert "$.tls.cert_file" in errors and "$" in errors


def test_worker_and_by_id_variant() -> None:
    files = render_files(_variant())
    disko = files["node01/disko.nix"]
    assert '"/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001"' in disko
    assert 'device = "/dev/sdb"' in disko and disko.count("ESP = {") == 1
    worker = NodeConfig.model_validate_json(files["node03/secrets/cluster-config.json"])
    assert not worker.bootstrap and worker.role.value == "worker"
    cp = NodeConfig.model_validate_json(files["node01/secrets/cluster-config.json"])
    assert [p.node_id for p in cp.peers] == ["node01", "node02"]
    assert "allowedTCPPorts = [ 22 ];" in files["node03/configuration.nix"]
    assert "chainfire.enable = false;" in files["node03/configuration.nix"]


def test_render_is_deterministic_and_rerun_safe(tmp_path: Path) -> None:
    spec = _seed()
    first = render(spec, tmp_path / "a")
    assert {w.status for w in first} == {"created"}
    render(spec, tmp_path / "b")
    for w in first:
        rel = w.path.relative_to(tmp_path / "a")
        assert (tmp_path / "b" / rel).read_bytes() == w.path.read_bytes(), rel
    # A key written by `plasma pki` survives a re-render; unchanged files are not rewritten.
    key = tmp_path / "a" / "node01" / "secrets" / "node01.key"
    key.write_text("KEY")
    key.chmod(0o400)
    again = render(spec, tmp_path / "a")
    assert {w.status for w in again} == {"unchanged"}
    assert key.read_text() == "KEY"
    changed = spec.model_copy(update={"name": "other"})
    statuses = {w.path.name: w.status for w in render(changed, tmp_path / "a")}
    assert statuses["hosts"] == "updated"


def _plain() -> ClusterSpec:
    """Single-disk nodes with the plain (no LVM) layout."""
    spec, issues = parse_spec(
        sample_spec().replace("root_size: 80G", "root_size: 80G\n        layout: plain")
    )
    assert issues == []
    return spec


@pytest.mark.parametrize("variant", ["seed", "variant", "plain"])
def test_every_nix_file_parses(variant: str, tmp_path: Path) -> None:
    spec = {"seed": _seed, "variant": _variant, "plain": _plain}[variant]()
    paths = [w.path for w in render(spec, tmp_path) if w.path.suffix == ".nix"]
    assert len(paths) == 8
    for path in paths:
        proc = subprocess.run(
            ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{path}: {proc.stderr}"


def test_render_cli_json_and_bad_spec(tmp_path: Path) -> None:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(sample_spec())
    code, output = run_plasma("render", "-s", str(spec), "-o", str(tmp_path / "o"), "--json")
    assert code == 0
    statuses = {
        Path(w["path"]).relative_to(tmp_path / "o").as_posix(): w["status"]
        for w in json.loads(output)
    }
    assert statuses["node02/disko.nix"] == "created" and statuses["cluster.yaml"] == "created"
    spec.write_text(sample_spec().replace("ip: 192.168.100.12", "ip: 192.168.100.11"))
    code, output = run_plasma("render", "-s", str(spec), "-o", str(tmp_path / "o"))
    assert code == 2 and "nodes[1] (node02).ip" in output and "also used by nodes[0]" in output


def test_nix_strings_are_escaped() -> None:
    assert nix_str('a"b\\c${x}') == '"a\\"b\\\\c\\${x}"'


def test_cluster_raft_timing_reaches_every_node_config() -> None:
    text = sample_spec() + "raft:\n  heartbeat_ms: 200\n  election_timeout_ms: [1000, 2000]\n"
    spec, issues = parse_spec(text)
    assert issues == []
    files = render_files(spec)
    for i in (1, 2, 3):
        cfg = NodeConfig.model_validate_json(files[f"node0{i}/secrets/cluster-config.json"])
        assert cfg.raft.heartbeat_ms == 200
        assert cfg.raft.election_timeout_s == (1.0, 2.0)
    with pytest.raises(SpecError, match=r"raft: raft.election_timeout_ms is \[900, 100\]"):
        parse_spec(sample_spec() + "raft:\n  election_timeout_ms: [900, 100]\n")
