"""A dashboard app behind its login gate, in front of a cluster that is not there."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from plasmacloud.cluster.services import CHAINFIRE
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.common.config import NodeConfig, PeerConfig, ServicePorts, TLSConfig
from plasmacloud.dashboard.auth import Gate
from plasmacloud.dashboard.server import Sources, make_app


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


@pytest.fixture
async def dashboard() -> AsyncIterator[tuple[Client, Gate]]:
    """A client of the dashboard (cookies kept, also for 127.0.0.1) and its gate."""
    gate = Gate()
    server = TestServer(make_app(Sources(absent_target()), gate), host="127.0.0.1")
    client = TestClient(server, cookie_jar=aiohttp.CookieJar(unsafe=True))
    await client.start_server()
    try:
        yield client, gate
    finally:
        await client.close()
