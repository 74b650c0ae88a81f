"""FlareDB in the process lab (3 nodes, mTLS, the lab's own PKI): the issue's "done"
commands, curl with the lab's env exports against every node."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.lab.services import SERVICES
from plasmacloud.provision import pki

pytestmark = pytest.mark.slow


def test_lab_runs_flaredb_and_env_points_curl_at_it(lab_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert shutil.which("curl"), "curl must be installed (scripts/setup.sh)"
    lab = lab_factory(SERVICES)  # every service on every node, as `plasma lab up`
    asyncio.run(lab.wait_ready(timeout=60))
    status = CliRunner().invoke(app, ["lab", "status", "--json", "--dir", str(lab.layout.root)])
    assert status.exit_code == 0, status.output
    flare = json.loads(status.output)["flaredb"]
    assert flare["leader"] in ("node01", "node02", "node03")
    assert [(n["members"], n["reachable"]) for n in flare["nodes"]] == [(3, 3)] * 3
    table = CliRunner().invoke(app, ["lab", "status", "--dir", str(lab.layout.root)]).output
    assert "FlareDB" in table and f"leader agreed: {flare['leader']}" in table
    out = CliRunner().invoke(app, ["lab", "env", "--dir", str(lab.layout.root)]).output
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in out.splitlines()
        if line.startswith("export ")
    )
    urls = env["FLAREDB_URLS"].split(",")
    assert env["FLAREDB_URL"] == urls[0] and len(urls) == 3
    assert all(u.startswith("https://") for u in urls)
    tls = [
        "--cacert",
        env["PLASMA_CACERT"],
        "--cert",
        env["PLASMA_CERT"],
        "--key",
        env["PLASMA_KEY"],
    ]

    def curl(*args: str) -> dict:  # type: ignore[type-arg]
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "10", *tls, *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return dict(json.loads(done.stdout))

    doc = curl(
        "-XPOST",
        env["FLAREDB_URL"] + "/db/execute",
        "-H",
        "Content-Type: application/json",
        "-d",
        '["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", ["INSERT INTO t(v) VALUES(?)", "x"]]',
    )
    assert doc == {"results": [{}, {"last_insert_id": 1, "rows_affected": 1}]}
    for url in urls:
        doc = curl(url + "/db/query?q=SELECT+*+FROM+t&level=strong")
        assert doc == {
            "results": [
                {"columns": ["id", "v"], "types": ["integer", "text"], "values": [[1, "x"]]}
            ]
        }
    nodes = curl(urls[1] + "/nodes?ver=2")["nodes"]
    assert sorted(n["id"] for n in nodes) == ["node01", "node02", "node03"]
    assert sum(n["leader"] for n in nodes) == 1 and all(n["reachable"] for n in nodes)
    # `plasma sql` reads the same exports (FLAREDB_URL, PLASMA_CACERT/CERT/KEY).
    res = CliRunner().invoke(app, ["flaredb", "sql", "--json", "-c", "SELECT v FROM t"], env=env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["results"][0]["values"] == [["x"]]
    # Without the client certificate the API refuses the handshake.
    bare = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--cacert", env["PLASMA_CACERT"], urls[0] + "/status"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert bare.returncode != 0
    # The lab runs IAM, so a certificate speaks for the IAM principal its CN names (the
    # operator's above is an admin): one from the same CA naming nobody gets a 403.
    stranger = pki.issue_client(pki.load_ca(lab.layout.pki_dir), tmp_path, "stranger")
    denied = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            env["PLASMA_CACERT"],
            "--cert",
            str(stranger.cert_path),
            "--key",
            str(stranger.key_path),
            "-w",
            "\n%{http_code}",
            urls[0] + "/db/query?q=SELECT+1",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    body, code = denied.stdout.rsplit("\n", 1)
    assert code == "403" and "names no enabled IAM user" in json.loads(body)["error"]
    assert "--iam-url" in " ".join(
        next(p.argv for p in lab.state.processes if p.service == "flaredb")
    )
