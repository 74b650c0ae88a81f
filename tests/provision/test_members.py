"""`plasma provision add-node` / `replace-node`: the spec, the certificate, every node's
files, and the quorum warnings."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509

from plasmacloud.common.config import NodeConfig
from plasmacloud.provision.spec import load_spec

from .helpers import run_plasma


def files(tree: Path) -> tuple[str, str]:
    return str(tree / "cluster.yaml"), str(tree / "out")


def sans(cert: Path) -> list[str]:
    ext = x509.load_pem_x509_certificate(cert.read_bytes()).extensions
    names = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


def test_add_node_writes_spec_cert_and_every_config_and_warns_on_even(tree: Path) -> None:
    spec, out = files(tree)
    code, output = run_plasma(
        "provision", "add-node", "node04", "--mac", "52:54:00:00:01:04",
        "--ip", "192.168.100.14", "--spec", spec, "--out", out,
    )  # fmt: skip
    assert code == 0, output
    assert "PF030-quorum-even" in output  # four voters tolerate what three do
    assert "plasma cluster add-node node04 --config" in output
    text = (tree / "cluster.yaml").read_text()
    assert text.startswith("# PlasmaCloud cluster spec")  # appended: the comments stay
    assert "comments are not kept" not in output
    node04 = load_spec(tree / "cluster.yaml").node("node04")
    assert (node04.bootstrap, node04.mac, str(node04.ip)) == (
        False,
        "52:54:00:00:01:04",
        "192.168.100.14",
    )
    assert node04.disks == load_spec(tree / "cluster.yaml").node("node03").disks

    cert = tree / "out" / "node04" / "secrets" / "node04.crt"
    assert "node04" in sans(cert) and "192.168.100.14" in sans(cert)
    own = NodeConfig.load(tree / "out" / "node04" / "secrets" / "cluster-config.json")
    assert own.bootstrap is False and [p.node_id for p in own.peers][-1] == "node04"
    for founder in ("node01", "node02", "node03"):
        cfg = json.loads((tree / "out" / founder / "secrets" / "cluster-config.json").read_text())
        assert [p["node_id"] for p in cfg["peers"]] == ["node01", "node02", "node03", "node04"]
        assert cfg["bootstrap"] is True
        assert cfg["hosts"]["node04"] == "192.168.100.14"

    # a fifth makes it odd again; a duplicate name or address is refused, nothing written
    code, output = run_plasma(
        "provision", "add-node", "node05", "--mac", "52:54:00:00:01:05",
        "--ip", "192.168.100.15", "--spec", spec, "--out", out,
    )  # fmt: skip
    assert code == 0 and "PF030" not in output, output
    before = (tree / "cluster.yaml").read_text()
    for name, mac, ip, why in (
        ("node05", "52:54:00:00:01:06", "192.168.100.16", "node05 is in the spec already"),
        ("node06", "52:54:00:00:01:06", "192.168.100.15", "192.168.100.15"),
    ):
        code, output = run_plasma(
            "provision", "add-node", name, "--mac", mac, "--ip", ip, "--spec", spec, "--out", out
        )
        assert code == 2 and why in output, output
    assert (tree / "cluster.yaml").read_text() == before


def test_replace_node_keeps_the_name_with_a_new_machine_and_key(tree: Path) -> None:
    spec, out = files(tree)
    key = tree / "out" / "node02" / "secrets" / "node02.key"
    old_key = key.read_bytes()
    code, output = run_plasma(
        "provision", "replace-node", "node02", "--mac", "52:54:00:00:02:02",
        "--ip", "192.168.100.22", "--spec", spec, "--out", out,
    )  # fmt: skip
    assert code == 0, output
    node02 = load_spec(tree / "cluster.yaml").node("node02")
    assert (node02.bootstrap, node02.mac, str(node02.ip)) == (
        False,
        "52:54:00:00:02:02",
        "192.168.100.22",
    )
    assert key.read_bytes() != old_key
    assert "192.168.100.22" in sans(tree / "out" / "node02" / "secrets" / "node02.crt")
    node01 = NodeConfig.load(tree / "out" / "node01" / "secrets" / "cluster-config.json")
    assert str(node01.peer("node02").ip) == "192.168.100.22"
    code, output = run_plasma("provision", "replace-node", "node09", "--spec", spec, "--out", out)
    assert code == 2 and "no node node09" in output
