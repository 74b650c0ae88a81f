"""`plasma iam serve` as a real process, driven by the `plasma iam` client commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from iam_fixtures import etcd, free_port, process
from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.common.config import NodeConfig
from plasmacloud.iam.etcd_store import EtcdStore

pytestmark = pytest.mark.slow
runner = CliRunner()


def node_config(tmp: Path, ip: str, iam_port: int, chainfire_port: int = 2379) -> Path:
    peer = {"node_id": "node01", "hostname": "node01", "ip": ip}
    ports = {"iam_http": iam_port, "chainfire_client": chainfire_port}
    cfg = NodeConfig.model_validate(
        {
            **peer,
            "peers": [{**peer, "ports": ports}],
            "ports": ports,
            "tls": {"enabled": False},
            "data_dir": str(tmp / "data"),
        }
    )
    path = tmp / "cluster-config.json"
    cfg.dump(path)
    return path


PLASMA = [sys.executable, "-c", "from plasmacloud.cli import app; app()"]


def serve_argv(cfg: Path, *extra: str) -> list[str]:
    return [*PLASMA, "iam", "serve", "--config", str(cfg), "--log-level", "DEBUG", *extra]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return bool(json.loads(r.read())["status"] == "ok")
    except OSError:
        return False


@pytest.fixture
def iam_process(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    ip = "127.0.0.91"
    port = free_port(ip)
    cfg = node_config(tmp_path, ip, port)
    creds = tmp_path / "lab" / "admin.json"
    log = tmp_path / "iam.log"
    url = f"http://{ip}:{port}"
    argv = serve_argv(cfg, "--store", "memory", "--bootstrap-out", str(creds))
    with process(argv, log, lambda: creds.exists() and healthy(url)) as proc:
        yield url, creds, log
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()


def test_serve_bootstrap_and_client_commands(
    iam_process: tuple[str, Path, Path], tmp_path: Path
) -> None:
    url, creds, log = iam_process
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    secret = json.loads(creds.read_text())
    base = ["iam", "--url", url, "--credentials", str(creds)]

    def plasma(*args: str, input: str | None = None) -> tuple[int, str]:
        result = runner.invoke(app, [*base, *args], input=input)
        return result.exit_code, result.output

    code, output = plasma("whoami")
    assert code == 0 and '"sa:admin-client"' in output
    policy = tmp_path / "app.json"
    policy.write_text(
        json.dumps(
            {"Statement": [{"Effect": "Allow", "Action": "chainfire:*", "Resource": "key/app/*"}]}
        )
    )
    assert plasma("policy", "create", "app", str(policy))[0] == 0
    assert plasma("group", "create", "devs", "--policy", "app")[0] == 0
    code, output = plasma("user", "create", "alice", "--group", "devs", input="alice-password\n")
    assert code == 0 and "alice-password" not in output
    code, output = plasma("user", "list", "--json")
    assert code == 0 and {u["name"] for u in json.loads(output)} == {"admin", "alice"}
    sim = ["simulate", "--principal", "user:alice", "--action", "chainfire:Put"]
    assert plasma(*sim, "--resource", "key/app/x")[0] == 0
    assert plasma(*sim, "--resource", "key/other/x")[0] == 1
    code, output = plasma("token", "--username", "alice", input="alice-password\n")
    assert code == 0 and output.strip().count(".") == 2
    alice_token = output.strip()
    code, output = plasma("verify", "-", input=alice_token + "\n")
    assert code == 0 and json.loads(output)["sub"] == "user:alice"
    code, output = plasma("verify", alice_token[:-3] + "AAA")
    assert code == 1 and json.loads(output)["valid"] is False
    assert plasma("role", "create", "reader", "--policy", "app")[0] == 0
    code, output = plasma("role", "assign", "users", "alice", "reader")
    assert code == 0 and json.loads(output)["roles"] == ["reader"]
    code, output = plasma("role", "list", "--json")
    assert code == 0 and json.loads(output)[0]["name"] == "reader"
    code, output = plasma("token", "--username", "alice", input="wrong-password\n")
    assert code == 1 and "invalid username or password" in output
    assert plasma("user", "set-password", "alice", input="alice-password-2\n")[0] == 0
    assert plasma("token", "--username", "alice", input="alice-password-2\n")[0] == 0
    code, output = plasma("sa", "create", "bot")
    first = json.loads(output)["client_secret"]
    code, output = plasma("sa", "reset-secret", "bot")
    assert code == 0 and json.loads(output)["client_secret"] != first

    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"Statement": [{"Effect": "Maybe", "Action": "x:y", "Resource": "*"}]})
    )
    code, output = plasma("policy", "create", "bad", str(bad))
    assert code == 1 and "document.Statement[0].Effect" in output

    code, output = plasma("audit", "--sub", "sa:admin-client", "--json")
    assert code == 0 and any(e["action"] == "iam:CreateUser" for e in json.loads(output))

    creds.chmod(0o644)
    code, output = plasma("whoami")
    assert code == 2 and "chmod 600" in output
    creds.chmod(0o600)
    dead = f"http://127.0.0.92:{free_port('127.0.0.92')}"
    unreachable = runner.invoke(app, ["iam", "--url", dead, "--credentials", str(creds), "whoami"])
    assert unreachable.exit_code == 3

    logged = log.read_text()
    for value in (secret["password"], secret["client_secret"], "alice-password"):
        assert value not in logged


def test_bootstrap_command_against_etcd(etcd_endpoint: str, tmp_path: Path) -> None:
    host, port = etcd_endpoint.split(":")
    cfg = node_config(tmp_path, host, free_port(host), chainfire_port=int(port))
    out = tmp_path / "secrets" / "admin.json"
    boot = ["iam", "bootstrap", "--store", "etcd", "--config", str(cfg)]
    first = runner.invoke(app, [*boot, "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    content = out.read_text()
    # a re-run may make an operator certificate's CN an admin user
    again = runner.invoke(app, [*boot, "--out", str(out), "--certificate-admin", "operator"])
    assert again.exit_code == 0 and "already bootstrapped" in again.output
    assert out.read_text() == content  # nothing rewritten

    async def operator_groups() -> list[str]:
        store = EtcdStore([etcd_endpoint])
        try:
            kv = await store.get("/plasmacloud/iam/users/operator")
        finally:
            await store.close()
        assert kv is not None
        return list(json.loads(kv.value)["groups"])

    assert asyncio.run(operator_groups()) == ["admins"]
    other = tmp_path / "other.json"
    lost = runner.invoke(app, [*boot, "--out", str(other)])
    assert lost.exit_code == 1 and not other.exists()
    assert json.loads(content)["password"] not in first.output + again.output


def test_three_serve_processes_share_chainfire(tmp_path: Path) -> None:
    """`plasma iam serve --store etcd` x3 on one real etcd, bootstrap, kill a node."""
    hosts = ["127.0.0.101", "127.0.0.102", "127.0.0.103"]
    with etcd(hosts, tmp_path) as etcd_port, contextlib.ExitStack() as stack:
        ports = [free_port(h) for h in hosts]
        peers = [
            {"node_id": f"node0{i + 1}", "hostname": f"node0{i + 1}", "ip": h,
             "ports": {"iam_http": p, "chainfire_client": etcd_port}}
            for i, (h, p) in enumerate(zip(hosts, ports, strict=True))
        ]  # fmt: skip
        urls, procs = [], []
        for i, peer in enumerate(peers):
            node_dir = tmp_path / str(peer["node_id"])
            node_dir.mkdir()
            cfg = NodeConfig.model_validate(
                {
                    **{k: peer[k] for k in ("node_id", "hostname", "ip")},
                    "peers": peers,
                    "ports": peer["ports"],
                    "tls": {"enabled": False},
                    "data_dir": str(node_dir / "data"),
                }
            )
            cfg.dump(node_dir / "cluster-config.json")
            url = f"http://{hosts[i]}:{ports[i]}"
            argv = serve_argv(node_dir / "cluster-config.json", "--store", "etcd")
            procs.append(
                stack.enter_context(process(argv, node_dir / "iam.log", partial(healthy, url)))
            )
            urls.append(url)
        creds = tmp_path / "admin.json"
        boot = runner.invoke(
            app, ["iam", "bootstrap", "--store", "etcd", "--config",
                  str(tmp_path / "node01" / "cluster-config.json"), "--out", str(creds)],
        )  # fmt: skip
        assert boot.exit_code == 0, boot.output
        secret = json.loads(creds.read_text())
        form = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "client_id": secret["client_id"],
             "client_secret": secret["client_secret"]}
        ).encode()  # fmt: skip
        with urllib.request.urlopen(f"{urls[0]}/oauth2/token", data=form, timeout=10) as r:
            token = json.loads(r.read())["access_token"]
        discos = [
            json.loads(urllib.request.urlopen(f"{u}/.well-known/openid-configuration").read())
            for u in urls
        ]
        assert {d["issuer"] for d in discos} == {urls[0]}  # one issuer for the cluster
        base = ["iam", "--url", ",".join(urls), "--credentials", str(creds)]
        os.killpg(procs[0].pid, signal.SIGTERM)  # node01's IAM goes away
        procs[0].wait(timeout=15)
        who = runner.invoke(app, [*base, "whoami"])
        assert who.exit_code == 0 and "sa:admin-client" in who.output, who.output
        req = urllib.request.Request(
            f"{urls[2]}/v1/self", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:  # node01's token, on node03
            assert json.loads(r.read())["sub"] == "sa:admin-client"


def test_policy_check_offline(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}))
    result = runner.invoke(app, ["iam", "policy", "check", str(good)])
    assert result.exit_code == 0 and "valid (1 statements)" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Statement": [{"Effect": "Allow", "Action": "nope"}]}))
    result = runner.invoke(app, ["iam", "policy", "check", str(bad)])
    assert result.exit_code == 1
    assert "Statement[0].Action[0]" not in result.output  # a single string: no index
    assert "Statement[0].Action: 'nope' is not an action" in result.output
    assert "Statement[0].Resource: exactly one of Resource or NotResource" in result.output
    (tmp_path / "broken.json").write_text("{")
    assert (
        runner.invoke(app, ["iam", "policy", "check", str(tmp_path / "broken.json")]).exit_code == 2
    )
