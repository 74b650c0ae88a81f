"""Cluster spec: the sample is the seed's cluster; bad specs give located, fixable errors."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from plasmacloud.common.config import Role
from plasmacloud.provision.sample import sample_spec
from plasmacloud.provision.spec import SpecError, SSHTarget, load_spec, parse_spec


def _errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text)
    return [str(i) for i in info.value.issues]


def load_spec_text(text: str) -> None:
    _spec, issues = parse_spec(text)
    if issues:
        raise SpecError("cluster.yaml", issues)


def test_sample_is_the_seed_cluster() -> None:
    spec, issues = parse_spec(sample_spec())
    assert issues == []
    assert [n.node_id for n in spec.nodes] == ["node01", "node02", "node03"]
    assert [n.ip for n in spec.nodes] == [IPv4Address(f"192.168.100.1{i}") for i in (1, 2, 3)]
    assert [n.mac for n in spec.nodes] == [f"52:54:00:00:01:0{i}" for i in (1, 2, 3)]
    assert all(n.role == Role.CONTROL_PLANE and n.bootstrap for n in spec.nodes)
    assert all(len(n.disks) == 1 for n in spec.nodes)
    assert str(spec.network.cidr) == "192.168.100.0/24"
    assert spec.nodes[1].target == SSHTarget(user="root", host="127.0.0.1", port=2202)


def test_load_spec_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="plasma init"):
        load_spec(tmp_path / "cluster.yaml")


def test_yaml_syntax_error_has_line_number() -> None:
    text = sample_spec().replace("  cidr: 192.168.100.0/24", "  cidr: [192.168.100.0/24")
    (err,) = _errors(text)
    assert "line 1" in err and "not valid YAML" in err


def test_invalid_mac_names_node_field_line_and_fix() -> None:
    text = sample_spec().replace('"52:54:00:00:01:02"', '"52:54:00:zz:01:02"')
    (err,) = _errors(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "52:54:00:zz" in t)
    assert f"line {line}: nodes[1] (node02).mac" in err
    assert "six hex pairs" in err


def test_invalid_ip_and_missing_field_reported_together() -> None:
    text = sample_spec().replace("ip: 192.168.100.13", "ip: 192.168.100.300")
    text = text.replace('    mac: "52:54:00:00:01:01"\n', "")
    errs = _errors(text)
    assert any("nodes[2] (node03).ip" in e and "dotted quad" in e for e in errs)
    assert any("nodes[0] (node01).mac" in e and "add the field" in e for e in errs)


def test_unknown_field_is_rejected() -> None:
    text = sample_spec().replace("    role: control-plane\n", "    rol: control-plane\n", 1)
    (err,) = _errors(text)
    assert "nodes[0] (node01).rol" in err and "spelling" in err


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ('"52:54:00:00:01:02"', '"52:54:00:00:01:01"', "mac"),
        ("ip: 192.168.100.12", "ip: 192.168.100.11", "ip"),
        (
            "node_id: node02\n    hostname: node02",
            "node_id: node01\n    hostname: nodex",
            "node_id",
        ),
        ("hostname: node03", "hostname: node01", "hostname"),
    ],
)
def test_duplicates_are_errors(old: str, new: str, code: str) -> None:
    errs = _errors(sample_spec().replace(old, new))
    assert len(errs) == 1
    assert f").{code}: " in errs[0] and "also used by nodes[0] (node01)" in errs[0]


def test_ip_outside_network_and_reserved() -> None:
    errs = _errors(
        sample_spec()
        .replace("ip: 192.168.100.12", "ip: 10.0.0.12")
        .replace("ip: 192.168.100.13", "ip: 192.168.100.1")
    )
    assert any("10.0.0.12 is outside network.cidr" in e for e in errs)
    assert any("gateway" in e and "192.168.100.1 " in e for e in errs)


def test_bad_ssh_key_and_disk_by_id() -> None:
    text = sample_spec().replace("ssh-ed25519 AAAA", "ssh-foo AAAA")
    (err,) = _errors(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "ssh-foo" in t)
    assert f"line {line}: ssh_authorized_keys" in err and "OpenSSH public key" in err
    text = sample_spec().replace(
        "- device: /dev/vda\n", "- device: /dev/vda\n        by_id: /dev/vda1\n", 1
    )
    (err,) = _errors(text)
    assert "nodes[0] (node01).disks[0].by_id" in err and "by-id" in err


def test_ssh_target_parse() -> None:
    assert SSHTarget.parse("ssh://admin@127.0.0.5:2222") == SSHTarget(
        user="admin", host="127.0.0.5", port=2222
    )
    assert str(SSHTarget.parse("127.0.0.5")) == "ssh://root@127.0.0.5:22"
    with pytest.raises(ValueError, match="not an SSH target"):
        SSHTarget.parse("http://x")
