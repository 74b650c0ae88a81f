"""How the lab wires IAM in, without running anything: service argv (auth on with TLS
only) and the `plasma lab env` exports a shell can eval."""

from __future__ import annotations

import subprocess
from pathlib import Path

from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import SERVICES, plasma_executable
from plasmacloud.lab.spec import LabSpec

runner = CliRunner()
NASTY_PASSWORD = "pa ss'w$rd\"`x"


def argv_of(lab: Lab, service: str, node: str) -> list[str]:
    cfg = lab.layout.node_config(lab.spec, node)
    (spec,) = [s for s in SERVICES if s.name == service]
    return spec.argv(lab.layout.config_path(node), cfg, plasma_executable())


def test_lab_turns_auth_on_with_every_iam_node_own_first(tmp_path: Path) -> None:
    lab = Lab.open(tmp_path, LabSpec())
    assert [s.name for s in SERVICES] == ["chainfire", "flaredb", "iam"]
    for service in ("chainfire", "flaredb"):
        argv = argv_of(lab, service, "node02")
        assert argv[1:3] == [service, "serve"]
        urls = [argv[i + 1] for i, a in enumerate(argv) if a == "--iam-url"]
        assert urls == [
            "https://127.0.0.12:8443",
            "https://127.0.0.11:8443",
            "https://127.0.0.13:8443",
        ]
        assert "--trusted-cn" not in argv  # no certificate skips IAM
    assert argv_of(lab, "iam", "node01")[1:] == [
        "iam",
        "serve",
        "--config",
        str(lab.layout.config_path("node01")),
    ]
    assert lab.layout.node_config(lab.spec, "node01").ports.iam_http == 8443


def test_without_tls_auth_stays_off(tmp_path: Path) -> None:
    lab = Lab.open(tmp_path, LabSpec(tls=False))
    assert "--iam-url" not in argv_of(lab, "chainfire", "node01")
    assert "--iam-url" not in argv_of(lab, "flaredb", "node01")


def test_env_exports_iam_and_the_admin_for_etcdctl(tmp_path: Path) -> None:
    lab = Lab.open(tmp_path, LabSpec())
    lab.prepare()
    before = runner.invoke(app, ["lab", "env", "--dir", str(tmp_path)]).output
    assert "export IAM_URL=https://127.0.0.11:8443" in before.splitlines()
    assert "PLASMA_ADMIN_CREDENTIALS" not in before and "ETCDCTL_USER" not in before
    creds = AdminCredentials("admin", NASTY_PASSWORD, "admin-client", "secret")
    creds.write(lab.layout.admin_credentials)
    env = runner.invoke(app, ["lab", "env", "--dir", str(tmp_path)])
    assert env.exit_code == 0, env.output
    # what `eval "$(plasma lab env)"` leaves in a shell
    shell = subprocess.run(
        [
            "bash",
            "-c",
            'eval "$1"; printf "%s\\n" "$IAM_URLS" "$IAM_CACERT" '
            '"$PLASMA_ADMIN_CREDENTIALS" "$ETCDCTL_USER" "$ETCDCTL_DIAL_TIMEOUT"',
            "-",
            env.output,
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    root = tmp_path.resolve()
    assert shell.stdout.splitlines() == [
        "https://127.0.0.11:8443,https://127.0.0.12:8443,https://127.0.0.13:8443",
        f"{root}/pki/ca.crt",
        f"{root}/admin.json",
        f"admin:{NASTY_PASSWORD}",
        "20s",  # etcdctl logs in while it dials: room for argon2id on a slow node
    ]
    lab.wipe()
    assert not lab.layout.admin_credentials.exists()
