"""Real etcd clients' own test suites (from their PyPI sdists) against etcd 3.4 and Chainfire.

Both targets are 3-node labs on plain TCP with auth off: neither suite's fixtures pass
certificates or credentials (aetcd 1.0.0 has no TLS at all), and the lab turns auth on
only over TLS. Each suite's cleanup (``etcdctl del --prefix``) runs against the same
single endpoint its client uses.

Every test that passes against etcd must pass against Chainfire, except those named in
the suite's expected differences; its known peer failures must be exactly what fails
against etcd too.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from plasmacloud.lab.control import Lab
from plasmacloud.lab.reference import ETCD
from plasmacloud.lab.services import CHAINFIRE, ServiceSpec
from plasmacloud.lab.spec import scratch_spec

from ..conftest import READY_TIMEOUT_S
from .suite import Result, Suite, run

pytestmark = pytest.mark.slow

SUITE_TIMEOUT_S = 900
PIFPAF_STOP = (
    "SIGSTOPs every process on the machine matching `--name pifpaf[12]` (pgrep -f): "
    "acting on processes found by pattern is not allowed here, and the lab has none"
)
PIFPAF_NAMES = (
    "asserts member names start with `pifpaf` (the upstream CI's cluster launcher); "
    "lab members are node01..node03"
)

SNAPSHOT_FORMAT = (
    "Chainfire's Snapshot streams its own SQLite-backed format, not a bbolt file, so "
    "`etcdctl snapshot status` on it answers `invalid database`"
)


@dataclass(frozen=True)
class ClientSuite:
    suite: Suite
    tests: tuple[str, ...]  # pytest arguments inside the unpacked sdist
    endpoint_env: str  # the variable the suite reads its http://host:port from
    deselected: dict[str, str] = field(default_factory=dict)  # node id -> why not run
    known_peer_failures: dict[str, str] = field(default_factory=dict)  # junit id -> why
    expected_differences: dict[str, str] = field(default_factory=dict)  # junit id -> why
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        return [*self.tests, *(a for test in self.deselected for a in ("--deselect", test))]


AETCD = ClientSuite(
    suite=Suite(
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
    ),
    # Only the integration tests talk to a server (the rest mock gRPC); --with-cluster
    # runs the member-list test too.
    tests=("tests/integration", "--with-cluster"),
    endpoint_env="TEST_ETCD_HTTP_URL",
    deselected={
        "tests/integration/test_kv.py::test_get_key_with_serializable": PIFPAF_STOP,
        "tests/integration/test_auth.py::test_auth": (
            "its client dials the hard-coded default localhost:2379, not "
            "TEST_ETCD_HTTP_URL, so its outcome depends on whatever else listens there"
        ),
    },
    known_peer_failures={"tests.integration.test_cluster::test_member_list": PIFPAF_NAMES},
    expected_differences={"tests.integration.test_maintenance::test_snapshot": SNAPSHOT_FORMAT},
)

ETCD3 = ClientSuite(
    suite=Suite(
        name="etcd3",
        version="0.12.0",
        sha256="89a704cb389bf0a010a1fa050ce19342d23bf6371ebda1c21cfe8ff3ed488726",
        # etcd3 0.12.0's own requirements/test.txt pins, except where those do not
        # install on Python 3.11 (grpcio 1.27, pytest 4.6): then the current release.
        # Its generated code needs protobuf 3.
        requirements=(
            "pytest==9.0.3",
            "hypothesis==4.56.3",
            "mock==2.0.0",
            "six==1.12.0",
            "tenacity==6.1.0",
            "grpcio==1.85.3",
            "protobuf==3.20.3",
        ),
    ),
    # TestEtcd3 is the class that reads PYTHON_ETCD_HTTP_URL; TestAlarms and
    # TestClient::test_compact dial the hard-coded localhost:2379, the rest are unit tests.
    tests=("tests/test_etcd3.py::TestEtcd3",),
    endpoint_env="PYTHON_ETCD_HTTP_URL",
    # its version-gated tests (nested txns, range compares) run for 3.3 and later
    env={"TEST_ETCD_VERSION": "v3.4.23"},
    deselected={
        "tests/test_etcd3.py::TestEtcd3::test_get_key_serializable": PIFPAF_STOP,
        "tests/test_etcd3.py::TestEtcd3::test_get_prefix_serializable": PIFPAF_STOP,
    },
    known_peer_failures={"tests.test_etcd3.TestEtcd3::test_member_list": PIFPAF_NAMES},
    expected_differences={"tests.test_etcd3.TestEtcd3::test_snapshot": SNAPSHOT_FORMAT},
)


def run_against(
    client: ClientSuite, service: ServiceSpec, lab_dir: Path, report: Path
) -> dict[str, Result]:
    lab = Lab.open(lab_dir, scratch_spec(tls=False), services=(service,))
    try:
        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        env = {**client.env, client.endpoint_env: lab.spec.client_endpoints()[0]}
        return run(client.suite, client.argv(), env, report, SUITE_TIMEOUT_S)
    finally:
        lab.down()


def failing(results: dict[str, Result]) -> dict[str, str]:
    return {t: r.message for t, r in results.items() if r.outcome != "passed"}


@pytest.mark.parametrize("client", [AETCD, ETCD3], ids=lambda c: c.suite.key)
def test_suite_passes_on_chainfire_where_it_passes_on_etcd(
    client: ClientSuite, tmp_path: Path
) -> None:
    assert shutil.which("etcd") and shutil.which("etcdctl"), "scripts/setup.sh installs etcd"
    started = time.monotonic()
    on_etcd = run_against(client, ETCD, tmp_path / "etcd", tmp_path / "etcd.xml")
    mid = time.monotonic()
    on_chainfire = run_against(client, CHAINFIRE, tmp_path / "cf", tmp_path / "cf.xml")
    took = f"etcd {mid - started:.0f}s, chainfire {time.monotonic() - mid:.0f}s"
    print(f"{client.suite.key}: {len(on_etcd)} tests; {took}")

    assert on_etcd.keys() == on_chainfire.keys()
    assert failing(on_etcd).keys() == client.known_peer_failures.keys(), failing(on_etcd)
    regressions = {
        t: r.message
        for t, r in on_chainfire.items()
        if r.outcome != "passed" and on_etcd[t].outcome == "passed"
    }
    assert regressions.keys() == client.expected_differences.keys(), regressions
