"""Chainfire's and FlareDB's authorization decisions reach IAM's audit log on the 3-node lab
(as `plasma lab up` runs it): a user's denied etcdctl put and denied FlareDB write are
listed by ``GET /v1/audit`` and ``plasma iam audit`` with who, action, resource, effect
and reason, under the service and node that decided."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from base64 import b64encode
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from plasmacloud.iam.client import IamClient
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.lab.services import plasma_executable

from .test_iam_lab import ALICE_PW, AUDIT_DEADLINE_S, IamLab, etcdctl, started_iam_lab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audit_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamLab]:
    """The lab with IAM everywhere and auth on; user alice may use key/app/* only."""
    with started_iam_lab(tmp_path_factory.mktemp("auditlab")) as started:
        yield started


async def _denials(lab: IamLab, source: str, want: tuple[str, str]) -> list[dict[str, Any]]:
    """alice's denied decisions from ``source``, polled until one is ``want`` (action,
    resource) or the deadline passes."""
    admin = AdminCredentials.read(lab.lab.layout.admin_credentials)
    params = {"sub": "user:alice", "decision": "Deny", "source": source, "limit": "500"}
    items: list[dict[str, Any]] = []
    async with IamClient(lab.iam_urls(), lab.lab.layout.ca_file) as c:
        await c.login_admin(admin)
        deadline = time.monotonic() + AUDIT_DEADLINE_S
        while time.monotonic() < deadline:
            items = (await c.call("GET", "/v1/audit", params=params))["items"]
            if any((e["action"], e["resource"]) == want for e in items):
                break
            await asyncio.sleep(0.5)
    return items


async def test_denied_etcdctl_put_and_flaredb_write_are_audited(audit_lab: IamLab) -> None:
    denied = etcdctl(audit_lab, "put", "other/audited", "v", user=f"alice:{ALICE_PW}")
    assert "etcdserver: permission denied" in denied.stderr, denied.stderr
    db = audit_lab.flaredb_urls()[1]
    basic = {"Authorization": "Basic " + b64encode(f"alice:{ALICE_PW}".encode()).decode()}
    async with (
        aiohttp.ClientSession(headers=basic) as s,  # rqlite's -u alice:password
        s.post(db + "/db/execute", json=["CREATE TABLE t (x)"], ssl=audit_lab.ssl_ctx()) as r,
    ):
        assert r.status == 403

    put = ("chainfire:Put", "key/other/audited")
    cf = [e for e in await _denials(audit_lab, "chainfire", put) if e["resource"] == put[1]]
    assert cf, "etcdctl's denied put never reached the audit log"
    assert {(e["sub"], e["action"], e["decision"], e["reason"]) for e in cf} == {
        ("user:alice", "chainfire:Put", "Deny", "implicit-deny")
    }
    nodes = {c.node_id for c in audit_lab.lab.configs()}
    assert {e["source"] for e in cf} <= {f"chainfire@{n}" for n in nodes}

    write = ("flaredb:Execute", "db/main")
    fd = [e for e in await _denials(audit_lab, "flaredb", write) if e["action"] == write[0]]
    assert [(e["sub"], e["resource"], e["decision"], e["reason"], e["source"]) for e in fd] == [
        ("user:alice", "db/main", "Deny", "implicit-deny", "flaredb@node02")
    ]

    # the operator's view of the same: `plasma iam audit` with what `plasma lab env` exports
    env = {
        **os.environ,
        "IAM_URLS": ",".join(audit_lab.iam_urls()),
        "IAM_CACERT": str(audit_lab.lab.layout.ca_file),
        "PLASMA_ADMIN_CREDENTIALS": str(audit_lab.lab.layout.admin_credentials),
    }
    filters = ["--sub", "user:alice", "--source", "flaredb@node02", "--decision", "Deny"]
    cli = subprocess.run(
        [plasma_executable(), "iam", "audit", *filters, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    rows = json.loads(cli.stdout)
    assert [(r["action"], r["resource"], r["source"]) for r in rows] == [
        ("flaredb:Execute", "db/main", "flaredb@node02")
    ]


async def test_services_export_audit_shipping_metrics(audit_lab: IamLab) -> None:
    cfg = audit_lab.lab.configs()[0]
    url = f"http://{cfg.listen_host}:{cfg.ports.chainfire_metrics}/metrics"
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        text = await r.text()
    for name in ("shipped_total", "dropped_total", "buffered"):
        assert f"plasma_audit_records_{name} " in text
