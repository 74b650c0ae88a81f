"""The dashboard app behind its login gate in front of a cluster that is not there, and
``plasma dashboard`` serving a running lab."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from dashboard_browser import Served, plasma, running_command

from plasmacloud.cluster.services import CHAINFIRE
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.common.config import NodeConfig, PeerConfig, ServicePorts, TLSConfig
from plasmacloud.dashboard.auth import Gate
from plasmacloud.dashboard.server import Sources, make_app
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import SERVICES, ServiceSpec
from plasmacloud.lab.spec import scratch_spec
from plasmacloud.provision.sample import sample_spec


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def absent_target() -> ClusterTarget:
    """One node whose ports nothing listens on: every probe of it fails at once."""
    ports = ServicePorts(**dict(zip(ServicePorts.model_fields, _free_ports(6), strict=True)))
    peer = PeerConfig(node_id="node01", hostname="node01", ip="127.0.0.1", ports=ports)
    cfg = NodeConfig(
        node_id="node01",
        hostname="node01",
        ip="127.0.0.1",
        peers=[peer],
        ports=ports,
        tls=TLSConfig(enabled=False),
    )
    return ClusterTarget("spec", [cfg], TLSConfig(enabled=False), (CHAINFIRE,))


Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]


@asynccontextmanager
async def client_of(sources: Sources, gate: Gate) -> AsyncIterator[Client]:
    """A client of the dashboard app that keeps cookies (also those of 127.0.0.1)."""
    server = TestServer(make_app(sources, gate), host="127.0.0.1")
    client = TestClient(server, cookie_jar=aiohttp.CookieJar(unsafe=True))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def dashboard() -> AsyncIterator[tuple[Client, Gate]]:
    """A client of the dashboard of :func:`absent_target`, and its gate."""
    gate = Gate()
    async with client_of(Sources(absent_target()), gate) as client:
        yield client, gate


@pytest.fixture
def full_lab(lab_factory: Callable[[tuple[ServiceSpec, ...]], Lab]) -> Lab:
    """A ready 3-node process lab running every service, as `plasma lab up` starts it."""
    lab = lab_factory(SERVICES)
    asyncio.run(lab.wait_ready(timeout=60))
    return lab


@pytest.fixture
def served(full_lab: Lab) -> Iterator[Served]:
    """``plasma dashboard --dir LAB``."""
    with running_command("dashboard", "--dir", str(full_lab.layout.root)) as served:
        yield served


@pytest.fixture
def render_tree(tmp_path: Path) -> tuple[Path, Path]:
    """(cluster.yaml, out): the sample cluster rendered with its PKI, moved onto a
    loopback range where nothing answers (no traffic leaves 127/8)."""
    prefix = str(scratch_spec().first_ip).rsplit(".", 1)[0] + "."
    spec, out = tmp_path / "cluster.yaml", tmp_path / "out"
    spec.write_text(sample_spec().replace("192.168.100.", prefix))
    for argv in (["render"], ["pki", "init"]):
        subprocess.run(
            plasma(*argv, "--spec", str(spec), "--out", str(out)),
            check=True,
            capture_output=True,
            timeout=120,
        )
    return spec, out
