"""Disaster recovery from a snapshot, as etcd's users do it: `etcdctl snapshot save` from
a live 3-node lab, `plasma chainfire snapshot status` reads it, every member's data is
lost, `plasma chainfire restore` lays the file down on each node, and the cluster comes
back with every key at the snapshot's revision and takes new writes."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import CHAINFIRE, plasma_executable
from plasmacloud.lab.spec import scratch_spec

from .conftest import READY_TIMEOUT_S, etcdctl_env

pytestmark = pytest.mark.slow


def etcdctl(lab: Lab, *args: str, endpoints: str | None = None) -> str:
    env = etcdctl_env(lab)
    if endpoints:
        env["ETCDCTL_ENDPOINTS"] = endpoints
    done = subprocess.run(["etcdctl", *args], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def plasma(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([plasma_executable(), *args], capture_output=True, text=True, timeout=60)


def test_snapshot_restore_brings_every_key_back(tmp_path: Path) -> None:
    lab = Lab.open(tmp_path / "lab", scratch_spec(), services=(CHAINFIRE,))
    snap = tmp_path / "backup.db"
    try:
        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        for i in range(50):
            etcdctl(lab, "put", f"app/{i:02d}", f"v{i}")
        etcdctl(lab, "put", "app/00", "changed")  # history: a second version
        revision = json.loads(etcdctl(lab, "get", "app/00", "-w", "json"))["header"]["revision"]
        first = lab.spec.client_endpoints()[0]
        etcdctl(lab, "snapshot", "save", str(snap), endpoints=first)

        status = plasma("chainfire", "snapshot", "status", str(snap), "--json")
        assert status.returncode == 0, status.stderr
        shown = json.loads(status.stdout)
        assert shown["revision"] == revision and shown["total_keys"] == 50

        lab.down()
        for cfg in lab.configs():  # every member's disk is gone
            shutil.rmtree(cfg.data_path("chainfire"))
        for cfg in lab.configs():
            path = lab.layout.config_path(cfg.node_id)
            done = plasma("chainfire", "restore", str(snap), "--config", str(path))
            assert done.returncode == 0, done.stderr
            assert f"revision {revision}" in done.stdout
            again = plasma("chainfire", "restore", str(snap), "--config", str(path))
            assert again.returncode == 1 and "already holds" in again.stderr  # never over data

        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        got = json.loads(etcdctl(lab, "get", "app/", "--prefix", "-w", "json"))
        assert got["count"] == 50
        values = {base64_text(kv["key"]): base64_text(kv["value"]) for kv in got["kvs"]}
        assert values["app/00"] == "changed" and values["app/49"] == "v49"
        assert got["header"]["revision"] == revision
        etcdctl(lab, "put", "after", "restore")
        members = json.loads(etcdctl(lab, "member", "list", "-w", "json"))["members"]
        assert len(members) == 3
    finally:
        lab.down()


def test_a_damaged_snapshot_is_refused_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\0" + b"\0" * 100)
    done = plasma("chainfire", "snapshot", "status", str(bad))
    assert done.returncode == 1 and "SHA-256" in done.stderr


def base64_text(value: str) -> str:
    return base64.b64decode(value).decode()
