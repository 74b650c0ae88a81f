"""IAM test helpers and fixtures: in-process IAM servers on 127.0.0.x sharing one store."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from netports import free_port

from plasmacloud.common.config import NodeConfig
from plasmacloud.common.tls import client_context
from plasmacloud.iam.lockout import LockoutPolicy
from plasmacloud.iam.passwords import FAST_FOR_TESTS
from plasmacloud.iam.server import iam_ssl_context, start_server
from plasmacloud.iam.service import AdminCredentials, IamService, IamSettings, settings_from_config
from plasmacloud.iam.store import KVStore, MemoryStore
from plasmacloud.iam.tokens import TokenSettings
from plasmacloud.provision.pki import init_ca, issue_client, issue_node

ISSUER = "http://127.0.0.71:8080"
TLS_IAM_IP = "127.0.0.96"


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


def port_open(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


@contextlib.contextmanager
def process(
    argv: list[str], log: Path, ready: Callable[[], bool], timeout: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in its own process group until the block ends (SIGTERM, then SIGKILL)."""
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=f, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def etcd(hosts: list[str], data: Path) -> Iterator[int]:
    """A real single-member etcd 3.4 (plain TCP) answering on one port on every host."""
    binary = shutil.which("etcd")
    assert binary, "etcd-server must be installed (scripts/setup.sh)"
    client, peer = free_port(hosts[0]), free_port(hosts[0])
    urls = ",".join(f"http://{h}:{client}" for h in hosts)
    peer_url = f"http://{hosts[0]}:{peer}"
    argv = [
        binary,
        "--name=iam-test",
        f"--data-dir={data / 'etcd-data'}",
        f"--listen-client-urls={urls}",
        f"--advertise-client-urls={urls}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=iam-test={peer_url}",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
    with process(argv, data / "etcd.log", port_open(hosts[-1], client)):
        yield client


@pytest.fixture(scope="module")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real single-node etcd 3.4 on 127.0.0.81 (plain TCP), the Chainfire stand-in."""
    with etcd(["127.0.0.81"], tmp_path_factory.mktemp("etcd")) as port:
        yield f"127.0.0.81:{port}"


@dataclass
class TlsIam:
    """One IAM node over TLS whose cluster config names node01; clients of three kinds."""

    url: str
    svc: IamService
    store: MemoryStore
    node_ctx: ssl.SSLContext  # node01's certificate: a node of the cluster
    operator_ctx: ssl.SSLContext  # signed by the same CA, but no node id
    anonymous_ctx: ssl.SSLContext  # trusts the CA, presents nothing
    admin_token: str
    config: NodeConfig  # node01's cluster config (TLS with node01's certificate)


@pytest.fixture
async def tls_iam(tmp_path: Path) -> AsyncIterator[TlsIam]:
    """IAM on 127.0.0.96 with TLS (client certificates optional), admin bootstrapped."""
    ca = init_ca(tmp_path / "pki")
    node = issue_node(ca, tmp_path / "secrets", "node01", ["node01"], [TLS_IAM_IP])
    operator = issue_client(ca, tmp_path / "secrets", "operator")
    port = free_port(TLS_IAM_IP)
    peer = {"node_id": "node01", "hostname": "node01", "ip": TLS_IAM_IP}
    tls = {
        "enabled": True,
        "ca_file": str(node.ca_path),
        "cert_file": str(node.cert_path),
        "key_file": str(node.key_path),
        "client_cert_auth": True,
    }
    cfg = NodeConfig.model_validate(
        {
            **peer,
            "peers": [{**peer, "ports": {"iam_http": port}}],
            "ports": {"iam_http": port},
            "tls": tls,
            "data_dir": str(tmp_path / "data"),
        }
    )
    store = MemoryStore()
    # few failed logins per address, so brute-force limits show quickly
    limits = LockoutPolicy(ip_burst=3, ip_per_second=0.01)
    settings = replace(settings_from_config(cfg), hashing=FAST_FOR_TESTS, lockout=limits)
    svc = IamService(store, settings)
    admin = await svc.bootstrap()
    assert admin is not None
    runner = await start_server(svc, TLS_IAM_IP, port, iam_ssl_context(cfg), frozenset({"node01"}))
    node_ctx = client_context(cfg.tls)
    assert node_ctx is not None
    operator_ctx = ssl.create_default_context(cafile=str(node.ca_path))
    operator_ctx.load_cert_chain(str(operator.cert_path), str(operator.key_path))
    anonymous_ctx = ssl.create_default_context(cafile=str(node.ca_path))
    url = f"https://{TLS_IAM_IP}:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            form = {
                "grant_type": "client_credentials",
                "client_id": admin.client_id,
                "client_secret": admin.client_secret,
            }
            async with http.post(f"{url}/oauth2/token", data=form, ssl=anonymous_ctx) as r:
                token = str((await r.json())["access_token"])
        yield TlsIam(url, svc, store, node_ctx, operator_ctx, anonymous_ctx, token, cfg)
    finally:
        await runner.cleanup()
