"""Preflight: one test per check, the seed's failures reproduced, targets via recorded facts."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from plasmacloud.provision import preflight
from plasmacloud.provision.findings import Finding
from plasmacloud.provision.sample import sample_spec
from plasmacloud.provision.spec import SSHTarget, parse_spec
from plasmacloud.provision.target import ShellFacts, TargetFacts, parse_facts

from .helpers import run_plasma

REAL_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZXJrZXl1c2Vya2V5dXNlcmtleXVzZXJrZXl1c2Vy op@x"


def _ids(findings: list[Finding]) -> set[str]:
    return {f.id for f in findings}


def _spec_only(tmp_path: Path, text: str) -> list[Finding]:
    (tmp_path / "c.yaml").write_text(text)
    return preflight.run(preflight.PreflightRequest(spec_path=tmp_path / "c.yaml"))


def _tree(tree: Path) -> list[Finding]:
    return preflight.run(
        preflight.PreflightRequest(spec_path=tree / "cluster.yaml", out=tree / "out")
    )


def test_clean_tree_passes_via_cli(tree: Path) -> None:
    code, output = run_plasma(
        "preflight", "-s", str(tree / "cluster.yaml"), "-o", str(tree / "out"), "--json"
    )
    assert code == 0, output
    # Only the sample's placeholder key is worth a warning.
    assert [f["id"] for f in json.loads(output)["findings"]] == ["PF050-ssh-key-placeholder"]


def test_seed_renamed_ca_cert_fails_with_id_and_hint(tree: Path) -> None:
    secrets = tree / "out" / "node02" / "secrets"
    (secrets / "ca.crt").rename(secrets / "ca-cert.pem")
    code, output = run_plasma(
        "preflight", "-s", str(tree / "cluster.yaml"), "-o", str(tree / "out")
    )
    assert code == 1
    assert "ERROR   PF001-cert-missing [node02]" in output
    assert "ca-cert.pem" in output and "fix: rename the file to ca.crt" in output
    assert "preflight FAILED: 1 error(s)" in output


def test_seed_peer_without_hosts_entry_in_config(tree: Path) -> None:
    path = tree / "out" / "node01" / "secrets" / "cluster-config.json"
    raw = json.loads(path.read_text())
    raw["hosts"] = {k: v for k, v in raw["hosts"].items() if k != "node03"}
    path.write_text(json.dumps(raw))
    findings = _tree(tree)
    unresolved = [f for f in findings if f.id == "PF014-peer-unresolved"]
    assert len(unresolved) == 1 and unresolved[0].node == "node01"
    assert "node03" in unresolved[0].message
    assert "PF013-config-stale" in _ids(findings)


def test_seed_peer_without_networking_hosts_entry(tree: Path) -> None:
    path = tree / "out" / "node02" / "configuration.nix"
    text = path.read_text()
    path.write_text(re.sub(r'.*"192\.168\.100\.11" = .*\n', "", text))
    findings = [f for f in _tree(tree) if f.id == "PF015-hosts-entry-missing"]
    assert [(f.node, "node01" in f.message) for f in findings] == [("node02", True)]


def test_missing_config_and_invalid_config(tree: Path) -> None:
    (tree / "out" / "node01" / "secrets" / "cluster-config.json").unlink()
    (tree / "out" / "node02" / "secrets" / "cluster-config.json").write_text("{")
    findings = _tree(tree)
    assert {(f.id, f.node) for f in findings if f.id.startswith(("PF011", "PF012"))} == {
        ("PF011-config-missing", "node01"),
        ("PF012-config-invalid", "node02"),
    }


def test_spec_invalid_pf000(tmp_path: Path) -> None:
    findings = _spec_only(tmp_path, sample_spec().replace('"52:54:00:00:01:02"', "zz"))
    assert _ids(findings) == {"PF000-spec-invalid"}
    assert "nodes[1] (node02).mac" in findings[0].message


@pytest.mark.parametrize(
    ("old", "new", "check"),
    [
        ('"52:54:00:00:01:02"', '"52:54:00:00:01:01"', "PF023-duplicate-mac"),
        ("ip: 192.168.100.12", "ip: 192.168.100.11", "PF022-duplicate-ip"),
        ("node_id: node02\n    hostname: node02", "node_id: node01\n    hostname: x", "PF020"),
        ("hostname: node03", "hostname: node01", "PF021-duplicate-hostname"),
        ("ip: 192.168.100.13", "ip: 10.1.1.13", "PF024-ip-outside-network"),
        ("ip: 192.168.100.13", "ip: 192.168.100.1", "PF025-ip-reserved"),
        ("gateway: 192.168.100.1", "gateway: 10.0.0.1", "PF026-gateway-outside-network"),
        ("  flaredb_http: 4001", "  flaredb_http: 22", "PF040-port-clash"),
        ("server_ip: 192.168.100.1", "server_ip: 10.0.0.1", "PF028-netboot-network"),
        ("dhcp: full", "dhcp: full\n  dhcp_range: [192.168.100.10, 192.168.100.20]", "PF028"),
        ("dhcp: full", "dhcp: full\n  dhcp_range: [192.168.100.99, 192.168.100.20]", "PF028"),
    ],
)
def test_spec_consistency_errors(tmp_path: Path, old: str, new: str, check: str) -> None:
    findings = _spec_only(tmp_path, sample_spec(REAL_KEY).replace(old, new))
    assert [f.id for f in findings if f.id.startswith(check)], findings
    assert all(f.severity == "error" for f in findings)


def _nodes(text: str, count: int) -> str:
    """The sample with ``count`` nodes (extra ones numbered on)."""
    head, _, body = text.partition("nodes:\n")
    node = body.split("  - node_id:")[1]
    parts = []
    for i in range(1, count + 1):
        n = node.replace("node01", f"node{i:02d}").replace("100.11", f"100.{10 + i}")
        n = n.replace("01:01", f"01:{i:02x}").replace("2201", f"22{i:02d}")
        parts.append("  - node_id:" + n)
    return head + "nodes:\n" + "".join(parts)


def test_quorum_even_and_small_warn(tmp_path: Path) -> None:
    four = _spec_only(tmp_path, _nodes(sample_spec(REAL_KEY), 4))
    assert [(f.id, f.severity) for f in four] == [("PF030-quorum-even", "warning")]
    one = _spec_only(tmp_path, _nodes(sample_spec(REAL_KEY), 1))
    assert [(f.id, f.severity) for f in one] == [("PF031-quorum-small", "warning")]
    assert _spec_only(tmp_path, _nodes(sample_spec(REAL_KEY), 5)) == []


def test_bootstrap_flags(tmp_path: Path) -> None:
    base = sample_spec(REAL_KEY)
    none = base.replace("bootstrap: true", "bootstrap: false")
    assert _ids(_spec_only(tmp_path, none)) == {"PF032-bootstrap-none"}
    partial = base.replace("bootstrap: true", "bootstrap: false", 2)
    assert _ids(_spec_only(tmp_path, partial)) == {"PF034-bootstrap-partial"}
    worker = base.replace("role: control-plane", "role: worker", 1)
    ids = _ids(_spec_only(tmp_path, worker))
    assert ids == {"PF033-bootstrap-worker", "PF031-quorum-small"}


def test_flake_untracked_or_ignored_in_git(tree: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tree), *args], check=True, timeout=30, capture_output=True)

    def flagged() -> list[Finding]:
        return [f for f in _tree(tree) if f.id == "PF051-flake-untracked"]

    git("init", "-q")
    assert len(flagged()) == 1
    (tree / ".gitignore").write_text("out/\n")  # ignored is as invisible to the flake
    (finding,) = flagged()
    assert "ignored" in finding.message and "never the keys" in finding.fix
    git("add", "-f", *[str(p) for p in (tree / "out").rglob("*.nix")])
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "rendered")
    assert flagged() == []


# -- targets (recorded facts instead of SSH) ------------------------------------------

GOOD = TargetFacts(
    mem_mb=16000,
    os_id="nixos",
    kexec_load_disabled="0",
    nix="/run/current-system/sw/bin/nix-store",
    python="3.11",
    systemd=True,
    by_id={"/dev/disk/by-id/virtio-node01": "/dev/vda"},
    block_devices=["/dev/vda"],
    listening_ports={22},
)


class FakeFacts:
    """Recorded facts per target host:port (no SSH)."""

    def __init__(self, facts: dict[int, TargetFacts]) -> None:
        self.facts = facts
        self.asked: list[SSHTarget] = []

    def gather(self, target: SSHTarget) -> TargetFacts:
        self.asked.append(target)
        return self.facts[target.port]


def _target_findings(spec_text: str, facts: TargetFacts, tmp_path: Path) -> list[Finding]:
    (tmp_path / "c.yaml").write_text(spec_text)
    spec = parse_spec(spec_text)[0]
    source = FakeFacts({2201: facts})
    req = preflight.PreflightRequest(
        spec_path=tmp_path / "c.yaml",
        targets=preflight.resolve_targets(spec, ["ssh://root@127.0.0.1:2201"], False),
        facts=source,
    )
    findings = preflight.run(req)
    assert source.asked == [SSHTarget(host="127.0.0.1", port=2201)]
    return [f for f in findings if f.node == "node01"]


BY_ID = sample_spec(REAL_KEY).replace(
    "- device: /dev/vda\n", "- device: /dev/vda\n        by_id: /dev/disk/by-id/virtio-node01\n", 1
)


@pytest.mark.parametrize(
    ("method", "change", "check"),
    [
        ("nixos-anywhere", {"mem_mb": 2048}, "PF061-ram-low"),
        ("nixos-anywhere", {"kexec_load_disabled": "1", "os_id": "debian"}, "PF062"),
        ("ssh", {"nix": ""}, "PF063-nix-missing"),
        ("ssh", {"os_id": "debian", "python": "3.9"}, "PF065-python-missing"),
        ("nixos-anywhere", {"by_id": {}, "block_devices": ["/dev/sda"]}, "PF064-disk-missing"),
        ("nixos-anywhere", {"listening_ports": {22, 2379}}, "PF041-port-in-use"),
        ("image", {"error": "Permission denied (publickey)"}, "PF060-ssh-unreachable"),
    ],
)
def test_target_checks(tmp_path: Path, method: str, change: dict[str, object], check: str) -> None:
    text = BY_ID.replace("method: nixos-anywhere", f"method: {method}")
    assert _target_findings(text, GOOD, tmp_path) == []
    findings = _target_findings(text, replace(GOOD, **change), tmp_path)  # type: ignore[arg-type]
    assert [f.id for f in findings if f.id.startswith(check)], findings
    assert all(f.severity == "error" for f in findings)


def test_seed_small_vm_ram_message_mentions_swap(tmp_path: Path) -> None:
    (finding,) = _target_findings(BY_ID, replace(GOOD, mem_mb=1800), tmp_path)
    assert "1800 MB" in finding.message and "swap does not count" in finding.message


def test_disk_by_kernel_name_warns_with_by_id_suggestion(tmp_path: Path) -> None:
    (finding,) = _target_findings(sample_spec(REAL_KEY), GOOD, tmp_path)
    assert finding.id == "PF066-disk-not-by-id" and finding.severity == "warning"
    assert "by_id: /dev/disk/by-id/virtio-node01" in finding.fix


def test_resolve_targets() -> None:
    spec = parse_spec(sample_spec())[0]
    assert preflight.resolve_targets(spec, ["node02=ssh://root@127.0.0.5:22"], False) == {
        "node02": SSHTarget(host="127.0.0.5")
    }
    assert set(preflight.resolve_targets(spec, [], True)) == {"node01", "node02", "node03"}
    with pytest.raises(ValueError, match="node01="):
        preflight.resolve_targets(spec, ["ssh://root@127.0.0.9:22"], False)


def test_facts_script_runs_here_and_parses() -> None:
    facts = ShellFacts(local=True).gather(SSHTarget(host="127.0.0.1"))
    assert facts.error is None and facts.mem_mb > 0 and facts.os_id != "unknown"
    recorded = parse_facts(
        "mem_kb=2097152\nos_id=nixos\nkexec_load_disabled=0\nnix=/bin/nix-store\n"
        "python=3.11\nsystemd=yes\nby_id=/dev/disk/by-id/virtio-a=/dev/vda\n"
        "block=/dev/vda\nlisten=0.0.0.0:22\nlisten=[::]:2379\n"
    )
    assert recorded.mem_mb == 2048 and recorded.kexec_ok and recorded.systemd
    assert recorded.by_id_for("/dev/vda") == ["/dev/disk/by-id/virtio-a"]
    assert recorded.listening_ports == {22, 2379}


def test_unreachable_ssh_is_reported(tmp_path: Path) -> None:
    # A closed loopback port: ssh fails fast, nothing leaves the machine.
    facts = ShellFacts(timeout=20).gather(SSHTarget(host="127.0.0.1", port=1))
    assert facts.error
    assert (
        preflight.check_target(
            parse_spec(sample_spec())[0],
            parse_spec(sample_spec())[0].nodes[0],
            SSHTarget(host="127.0.0.1", port=1),
            facts,
        )[0].id
        == "PF060-ssh-unreachable"
    )


def test_every_emitted_check_id_is_catalogued_and_documented() -> None:
    src = Path(preflight.__file__).parent
    emitted = set()
    for path in src.glob("*.py"):
        emitted |= set(re.findall(r'"(PF\d{3}-[a-z-]+)"', path.read_text()))
    assert emitted == set(preflight.CHECKS)
    doc = (Path(__file__).parents[2] / "docs" / "provisioning.md").read_text()
    assert [i for i in preflight.CHECKS if f"`{i}`" not in doc] == []


def test_list_checks() -> None:
    code, output = run_plasma("preflight", "--list-checks", "--json")
    assert code == 0 and json.loads(output) == preflight.CHECKS
    code, output = run_plasma("preflight", "--list-checks")
    assert code == 0 and output.splitlines()[1].startswith("PF001-cert-missing ")


def test_init_writes_sample_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    code, output = run_plasma("init", "--spec", str(path), "--ssh-key", REAL_KEY)
    assert code == 0 and "plasma render" in output
    spec, issues = parse_spec(path.read_text())
    assert issues == [] and spec.ssh_authorized_keys == [REAL_KEY]
    assert run_plasma("init", "--spec", str(path))[0] == 2
    assert run_plasma("init", "--spec", str(path), "--force")[0] == 0


def test_nothing_rendered_is_one_finding(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(sample_spec(REAL_KEY))
    findings = preflight.run(
        preflight.PreflightRequest(spec_path=tmp_path / "c.yaml", out=tmp_path / "out")
    )
    assert [(f.id, "plasma render" in f.fix) for f in findings] == [("PF011-config-missing", True)]
