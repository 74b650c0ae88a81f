"""A Python etcd client from PyPI (`etcd3`, unchanged) against the cluster over mTLS.

`etcd3` pins protobuf<4, which clashes with this project's generated code, so it gets
its own venv (built once into a cache dir, reused afterwards) and runs a small script.
`aetcd` 1.0.0 shares our venv but has no TLS support at all, so it is exercised on a
plain-TCP cluster.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import CHAINFIRE
from plasmacloud.lab.spec import scratch_spec

from .conftest import READY_TIMEOUT_S

pytestmark = pytest.mark.slow

ETCD3_REQUIREMENTS = ["etcd3==0.12.0", "protobuf>=3.6,<4"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "plasmacloud"
SCRIPT = Path(__file__).with_name("etcd3_script.py")
AETCD_SCRIPT = Path(__file__).with_name("aetcd_script.py")


@pytest.fixture(scope="session")
def etcd3_python() -> Path:
    """Python of a venv with etcd3 installed (created under a lock, reused across runs)."""
    venv = CACHE / "etcd3-venv-0.12.0"
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "etcd3-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not python.exists():
            building = venv.with_suffix(".building")
            shutil.rmtree(building, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
            subprocess.run(
                [
                    str(building / "bin" / "pip"),
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    *ETCD3_REQUIREMENTS,
                ],
                check=True,
                timeout=300,
            )
            building.rename(venv)  # only a complete venv ever appears under the final name
    return python


def test_etcd3_client_over_mtls_across_nodes(shared_lab: Lab, etcd3_python: Path) -> None:
    endpoints = [f"{c.ip}:{c.ports.chainfire_client}" for c in shared_lab.configs()]
    layout = shared_lab.layout
    proc = subprocess.run(
        [
            str(etcd3_python),
            str(SCRIPT),
            str(layout.ca_file),
            str(layout.operator_cert),
            str(layout.operator_key),
            *endpoints,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["get"] == "1"
    assert seen["prefix"] == [["1", "/py/one"], ["2", "/py/two"]]
    assert seen["txn"] == [True, "11"]
    assert seen["lease"] == {"ttl_granted": 60, "refreshed_ttl": 60, "keys": ["/py/leased"]}
    assert seen["after_revoke"] is None
    assert seen["watch"] == [["/py/w/1", "first"], ["/py/w/2", "second"]]
    assert seen["deleted"] == [True, False]
    assert seen["members"] == ["node01", "node02", "node03"]
    assert seen["status"]["version"] == "3.4.23"
    assert seen["status"]["leader"] in seen["members"]


def test_aetcd_client_over_plain_tcp_across_nodes(tmp_path: Path) -> None:
    lab = Lab.open(tmp_path / "lab", scratch_spec(tls=False), services=(CHAINFIRE,))
    try:
        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        first, _, last = (f"{c.ip}:{c.ports.chainfire_client}" for c in lab.configs())
        proc = subprocess.run(
            [sys.executable, str(AETCD_SCRIPT), first, last],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        lab.down()
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["get"] == "1"
    assert seen["prefix"] == [["/ae/one", "1"], ["/ae/two", "2"]]
    assert seen["txn"] == [True, "11"]
    assert seen["lease_keys"] == ["/ae/leased"]
    assert seen["after_revoke"] is None
    assert seen["deleted"] == 1
    assert seen["members"] == ["node01", "node02", "node03"]
    assert seen["status"]["version"] == "3.4.23"
    assert seen["status"]["leader"] in seen["members"]
