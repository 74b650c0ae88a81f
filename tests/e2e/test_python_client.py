"""A Python etcd client from PyPI (`etcd3`, unchanged) against the cluster over mTLS.

`etcd3` pins protobuf<4, which clashes with this project's generated code, so it gets
its own venv (built once into a cache dir, reused afterwards) and runs a small script.
`aetcd` 1.0.0 would share our venv but has no TLS support at all.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plasmacloud.lab.control import Lab

pytestmark = pytest.mark.slow

ETCD3_REQUIREMENTS = ["etcd3==0.12.0", "protobuf>=3.6,<4"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "plasmacloud"
SCRIPT = Path(__file__).with_name("etcd3_script.py")


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
