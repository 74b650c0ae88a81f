"""`plasma pki init|issue|rotate|check` on the seed's cluster, and every check's failure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from plasmacloud.common.config import NodeConfig
from plasmacloud.iam.sealing import read_sealing_key
from plasmacloud.provision import certs, pki
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.spec import ClusterSpec, parse_spec

from .helpers import run_plasma


def _check(tree: Path) -> tuple[int, list[dict[str, str]]]:
    code, output = run_plasma(
        "pki", "check", "--spec", str(tree / "cluster.yaml"), "--out", str(tree / "out"), "--json"
    )
    return code, json.loads(output)["findings"]


def _ids(findings: list[dict[str, str]]) -> set[tuple[str, str | None]]:
    return {(f["id"], f["node"]) for f in findings}


def _spec(tree: Path) -> ClusterSpec:
    return parse_spec((tree / "cluster.yaml").read_text())[0]


def test_init_issues_everything_and_check_is_clean(tree: Path) -> None:
    secrets = tree / "out" / "node02" / "secrets"
    assert {p.name for p in secrets.iterdir()} >= {"ca.crt", "node02.crt", "node02.key"}
    assert (tree / "out" / "pki" / "clients" / "admin.crt").exists()
    cert = pki.load_cert(secrets / "node02.crt")
    assert pki.cert_sans(cert) == ({"node02", "node02.lab.local"}, {"192.168.100.12"})
    assert _check(tree) == (0, [])


def test_seed_misnamed_certs_fail_with_pf001_and_name_the_strays(tree: Path) -> None:
    secrets = tree / "out" / "node01" / "secrets"
    for old, new in (
        ("ca.crt", "ca-cert.pem"),
        ("node01.crt", "cert.pem"),
        ("node01.key", "key.pem"),
    ):
        (secrets / old).rename(secrets / new)
    code, findings = _check(tree)
    assert code == 1
    assert _ids(findings) == {("PF001-cert-missing", "node01")}
    assert len(findings) == 3
    assert all("ca-cert.pem, cert.pem, key.pem" in f["message"] for f in findings)
    assert "rename the file to ca.crt" in findings[0]["fix"]


def test_key_permissions_pf008_and_issue_repairs_them(tree: Path) -> None:
    key = tree / "out" / "node03" / "secrets" / "node03.key"
    key.chmod(0o644)
    code, findings = _check(tree)
    assert code == 1 and _ids(findings) == {("PF008-cert-permissions", "node03")}
    code, output = run_plasma(
        "pki", "issue", "--spec", str(tree / "cluster.yaml"), "--out", str(tree / "out")
    )
    assert code == 0 and "kept" in output
    assert _check(tree) == (0, [])


def test_swapped_keys_pf007(tree: Path) -> None:
    out = tree / "out"
    k1, k2 = out / "node01/secrets/node01.key", out / "node02/secrets/node02.key"
    data1, data2 = k1.read_bytes(), k2.read_bytes()
    for k, d in ((k1, data2), (k2, data1)):
        k.chmod(0o600)
        k.write_bytes(d)
        k.chmod(0o400)
    code, findings = _check(tree)
    assert code == 1
    assert _ids(findings) == {("PF007-key-mismatch", "node01"), ("PF007-key-mismatch", "node02")}


def test_cert_of_another_node_pf002_and_pf004(tree: Path) -> None:
    out = tree / "out"
    shutil.copy(out / "node01/secrets/node01.crt", out / "node02/secrets/node02.crt")
    (out / "node02/secrets/node02.key").chmod(0o600)
    shutil.copy(out / "node01/secrets/node01.key", out / "node02/secrets/node02.key")
    (out / "node02/secrets/node02.key").chmod(0o400)
    code, findings = _check(tree)
    assert code == 1
    assert _ids(findings) == {
        ("PF002-cert-wrong-node", "node02"),
        ("PF004-cert-san-mismatch", "node02"),
    }


def test_foreign_ca_pf003(tree: Path, tmp_path: Path) -> None:
    foreign = pki.init_ca(tmp_path / "foreign")
    pki.issue_node(foreign, tree / "out/node03/secrets", "node03", ["node03"], ["192.168.100.13"])
    code, findings = _check(tree)
    assert code == 1
    assert ("PF003-cert-untrusted", "node03") in _ids(findings)


def test_spec_ip_change_pf004_then_issue_fixes(tree: Path) -> None:
    spec_file = tree / "cluster.yaml"
    spec_file.write_text(spec_file.read_text().replace("192.168.100.13", "192.168.100.23"))
    code, findings = _check(tree)
    assert code == 1
    assert _ids(findings) == {("PF004-cert-san-mismatch", "node03")}
    assert "192.168.100.23" in findings[0]["message"]
    assert run_plasma("pki", "issue", "-s", str(spec_file), "-o", str(tree / "out"))[0] == 0
    assert _check(tree) == (0, [])


def test_expiry_warning_and_expired_error(tree: Path) -> None:
    spec, out = _spec(tree), OutputLayout(tree / "out")
    certs.issue_cluster(spec, out, ["node01"], force=True, days=10)
    certs.issue_cluster(spec, out, ["node02"], force=True, days=0)
    code, findings = _check(tree)
    assert code == 1
    assert _ids(findings) == {("PF006-cert-expiring", "node01"), ("PF005-cert-expired", "node02")}
    severities = {f["id"]: f["severity"] for f in findings}
    assert severities == {"PF006-cert-expiring": "warning", "PF005-cert-expired": "error"}


def test_rotate_reissues_only_the_named_node(tree: Path) -> None:
    out = tree / "out"
    before = {n: (out / f"{n}/secrets/{n}.crt").read_bytes() for n in ("node01", "node02")}
    code, output = run_plasma(
        "pki", "rotate", "-s", str(tree / "cluster.yaml"), "-o", str(out), "-n", "node01"
    )
    assert code == 0 and "issued" in output
    assert (out / "node01/secrets/node01.crt").read_bytes() != before["node01"]
    assert (out / "node02/secrets/node02.crt").read_bytes() == before["node02"]
    assert _check(tree) == (0, [])
    assert (
        run_plasma(
            "pki", "rotate", "-s", str(tree / "cluster.yaml"), "-o", str(out), "-n", "nodeX"
        )[0]
        == 2
    )


def test_missing_ca_pf010(tree: Path) -> None:
    shutil.rmtree(tree / "out" / "pki")
    code, findings = _check(tree)
    assert code == 1 and ("PF010-ca-missing", None) in _ids(findings)
    code, output = run_plasma(
        "pki", "issue", "-s", str(tree / "cluster.yaml"), "-o", str(tree / "out")
    )
    assert code == 1 and "plasma pki init" in output


def test_every_node_gets_the_one_sealing_key_and_the_host_finds_it(tree: Path) -> None:
    out = OutputLayout(tree / "out")
    keys = {(out.secrets_dir(n) / "sealing.key").read_bytes() for n in ("node01", "node02")}
    assert len(keys) == 1 and keys == {(out.pki_dir / "sealing.key").read_bytes()}
    assert (out.secrets_dir("node01") / "sealing.key").stat().st_mode & 0o777 == 0o400
    config = NodeConfig.load(out.config_path("node01"))
    assert config.sealing_key_file == Path("/etc/nixos/secrets/sealing.key")
    local = out.local_config(config)  # what the host uses to act as node01 (qemu lab)
    assert local.sealing_key_file == out.secrets_dir("node01") / "sealing.key"
    assert local.tls.key_file == out.secrets_dir("node01") / "node01.key"
    assert len(read_sealing_key(local.sealing_key_file)) == 32


def test_ca_rollover_steps_keep_pki_check_green_and_refuse_out_of_order(tree: Path) -> None:
    spec, out = str(tree / "cluster.yaml"), tree / "out"
    node_ca = out / "node01/secrets/ca.crt"

    def step(name: str) -> tuple[int, str]:
        return run_plasma("pki", "ca-rollover", name, "-s", spec, "-o", str(out))

    assert step("promote")[0] == 1  # nothing started
    assert step("sideways")[0] == 2
    first = node_ca.read_bytes()
    code, output = step("start")
    assert code == 0 and "next: ship" in output, output
    assert node_ca.read_bytes().startswith(first) and node_ca.read_bytes().count(b"BEGIN") == 2
    assert _check(tree) == (0, [])  # every node trusts both; the old CA still signs
    assert step("start")[0] == 1  # one rollover at a time
    cert = (out / "node01/secrets/node01.crt").read_bytes()
    code, output = step("promote")
    assert code == 0, output
    assert (out / "node01/secrets/node01.crt").read_bytes() != cert  # reissued by the new CA
    assert _check(tree) == (0, [])
    code, output = step("finish")
    assert code == 0 and node_ca.read_bytes().count(b"BEGIN") == 1 and node_ca.read_bytes() != first
    assert _check(tree) == (0, [])
