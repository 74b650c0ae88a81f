"""aetcd's own integration tests (from its PyPI sdist) against real etcd 3.4 and Chainfire.

Both targets are 3-node labs on plain TCP with auth off: aetcd 1.0.0 has no TLS support
and its fixtures pass neither certificates nor credentials, and the lab turns auth on
only over TLS. The suite's cleanup (``etcdctl del --prefix ''`` after every test) runs
with the same single endpoint the client uses.

Every test that passes against etcd must pass against Chainfire, except those named in
EXPECTED_DIFFERENCES; KNOWN_PEER_FAILURES must be exactly what fails against etcd too.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from plasmacloud.lab.control import Lab
from plasmacloud.lab.reference import ETCD
from plasmacloud.lab.services import CHAINFIRE, ServiceSpec
from plasmacloud.lab.spec import scratch_spec

from ..conftest import READY_TIMEOUT_S
from .suite import Result, Suite, run

pytestmark = pytest.mark.slow

AETCD = Suite(
    name="aetcd",
    version="1.0.0",
    sha256="9d7173c9909ea3fc8a54dc7c82227c0ddf439d1b42c1bd2496956297d76c1107",
    # aetcd 1.0.0's own `test` extra (its pytest config needs pytest-cov), plus the
    # grpcio/protobuf this project runs on
    requirements=(
        "pytest==9.0.3",
        "pytest-asyncio==1.3.0",
        "pytest-cov==7.1.0",
        "pytest-mock==3.15.1",
        "grpcio==1.85.3",
        "protobuf==7.36.2",
    ),
)
# test (pytest node id) -> why it is not run against either target
DESELECTED = {
    "tests/integration/test_kv.py::test_get_key_with_serializable": (
        "SIGSTOPs every process on the machine matching `--name pifpaf[12]` (pgrep -f): "
        "acting on processes found by pattern is not allowed here"
    ),
    "tests/integration/test_auth.py::test_auth": (
        "its client dials the hard-coded default localhost:2379, not TEST_ETCD_HTTP_URL, "
        "so its outcome depends on whatever else listens there"
    ),
}
# Only the integration tests talk to a server (the rest mock gRPC); --with-cluster runs
# the member-list test too.
TESTS = [
    "tests/integration",
    "--with-cluster",
    *(arg for test in DESELECTED for arg in ("--deselect", test)),
]
SUITE_TIMEOUT_S = 900

# test id -> why it fails against etcd 3.4 as well
KNOWN_PEER_FAILURES = {
    "tests.integration.test_cluster::test_member_list": (
        "asserts member names start with `pifpaf` (the upstream CI's cluster launcher); "
        "lab members are node01..node03"
    ),
}

# test id -> why Chainfire still differs from etcd here
EXPECTED_DIFFERENCES = {
    "tests.integration.test_maintenance::test_snapshot": (
        "Chainfire's Snapshot streams its own SQLite-backed format, not a bbolt file, so "
        "`etcdctl snapshot status` answers `invalid database`"
    ),
}


def run_against(service: ServiceSpec, lab_dir: Path, report: Path) -> dict[str, Result]:
    lab = Lab.open(lab_dir, scratch_spec(tls=False), services=(service,))
    try:
        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        endpoint = lab.spec.client_endpoints()[0]
        return run(AETCD, TESTS, {"TEST_ETCD_HTTP_URL": endpoint}, report, SUITE_TIMEOUT_S)
    finally:
        lab.down()


def failing(results: dict[str, Result]) -> dict[str, str]:
    return {t: r.message for t, r in results.items() if r.outcome != "passed"}


def test_aetcd_suite_passes_on_chainfire_where_it_passes_on_etcd(tmp_path: Path) -> None:
    assert shutil.which("etcd") and shutil.which("etcdctl"), "scripts/setup.sh installs etcd"
    started = time.monotonic()
    on_etcd = run_against(ETCD, tmp_path / "etcd", tmp_path / "etcd.xml")
    mid = time.monotonic()
    on_chainfire = run_against(CHAINFIRE, tmp_path / "chainfire", tmp_path / "chainfire.xml")
    print(f"aetcd suite: etcd {mid - started:.0f}s, chainfire {time.monotonic() - mid:.0f}s")

    assert on_etcd.keys() == on_chainfire.keys()
    assert failing(on_etcd).keys() == KNOWN_PEER_FAILURES.keys(), failing(on_etcd)
    regressions = {
        t: r.message
        for t, r in on_chainfire.items()
        if r.outcome != "passed" and on_etcd[t].outcome == "passed"
    }
    assert regressions.keys() == EXPECTED_DIFFERENCES.keys(), regressions
