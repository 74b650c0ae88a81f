"""IAM test helpers and fixtures: in-process IAM servers on 127.0.0.x sharing one store."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from plasmacloud.iam.lockout import LockoutPolicy
from plasmacloud.iam.passwords import FAST_FOR_TESTS
from plasmacloud.iam.server import start_server
from plasmacloud.iam.service import AdminCredentials, IamService, IamSettings
from plasmacloud.iam.store import MemoryStore
from plasmacloud.iam.tokens import TokenSettings

ISSUER = "http://127.0.0.71:8080"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    url: str
    svc: IamService


@dataclass
class Cluster:
    store: MemoryStore
    nodes: list[Node]
    http: aiohttp.ClientSession
    admin: AdminCredentials

    @property
    def url(self) -> str:
        return self.nodes[0].url

    async def token(self, node: int = 0, **form: str) -> str:
        """An access token from ``node`` (admin client credentials unless ``form`` says)."""
        data = form or {
            "grant_type": "client_credentials",
            "client_id": self.admin.client_id,
            "client_secret": self.admin.client_secret,
        }
        async with self.http.post(f"{self.nodes[node].url}/oauth2/token", data=data) as r:
            body = await r.json()
            assert r.status == 200, body
            return str(body["access_token"])

    async def call(
        self, method: str, path: str, token: str | None, node: int = 0, **kw: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(
            method, self.nodes[node].url + path, headers=headers, **kw
        ) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body


ClusterFactory = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def iam_cluster() -> AsyncIterator[ClusterFactory]:
    """Start ``n`` IAM servers sharing one store (a stand-in for Chainfire) and bootstrap."""
    runners = []
    sessions = []

    async def make(n: int = 1, lockout: LockoutPolicy | None = None) -> Cluster:
        store = MemoryStore()
        nodes = []
        for i in range(n):
            host = f"127.0.0.{71 + i}"
            port = free_port(host)
            settings = IamSettings(
                node_id=f"node0{i + 1}",
                tokens=TokenSettings(issuer=ISSUER),
                lockout=lockout or LockoutPolicy(),
                hashing=FAST_FOR_TESTS,
                key_cache_seconds=0.0,
            )
            svc = IamService(store, settings)
            runners.append(await start_server(svc, host, port))
            nodes.append(Node(f"http://{host}:{port}", svc))
        admin = await nodes[0].svc.bootstrap()
        assert admin is not None
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        sessions.append(http)
        return Cluster(store, nodes, http, admin)

    try:
        yield make
    finally:
        for s in sessions:
            await s.close()
        for r in runners:
            await r.cleanup()
