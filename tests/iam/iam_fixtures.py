"""IAM test helpers and fixtures: in-process IAM servers on 127.0.0.x sharing one store."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from plasmacloud.iam.lockout import LockoutPolicy
from plasmacloud.iam.passwords import FAST_FOR_TESTS
from plasmacloud.iam.server import start_server
from plasmacloud.iam.service import AdminCredentials, IamService, IamSettings
from plasmacloud.iam.store import KVStore, MemoryStore
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
    runner: web.AppRunner


@dataclass
class Cluster:
    store: KVStore
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

    async def make(
        n: int = 1, lockout: LockoutPolicy | None = None, store: KVStore | None = None
    ) -> Cluster:
        store = store or MemoryStore()
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
            runner = await start_server(svc, host, port)
            runners.append(runner)
            nodes.append(Node(f"http://{host}:{port}", svc, runner))
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


@pytest.fixture(scope="module")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node etcd 3.4 on 127.0.0.81 (plain TCP), the Chainfire stand-in."""
    binary = shutil.which("etcd")
    assert binary, "etcd-server must be installed (scripts/setup.sh)"
    host = "127.0.0.81"
    client, peer = free_port(host), free_port(host)
    data = tmp_path_factory.mktemp("etcd")
    argv = [
        binary,
        "--name=iam-test",
        f"--data-dir={data / 'data'}",
        f"--listen-client-urls=http://{host}:{client}",
        f"--advertise-client-urls=http://{host}:{client}",
        f"--listen-peer-urls=http://{host}:{peer}",
        f"--initial-advertise-peer-urls=http://{host}:{peer}",
        f"--initial-cluster=iam-test=http://{host}:{peer}",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
    with open(data / "etcd.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection((host, client), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((data / "etcd.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield f"{host}:{client}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
