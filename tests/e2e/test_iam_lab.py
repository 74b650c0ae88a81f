"""IAM on the 3-node process lab with auth on in Chainfire and FlareDB (as `plasma lab up`):
tokens from one node work on every node, policies decide, revocation reaches every node,
one IAM node down changes nothing, and real etcdctl and curl work with IAM credentials."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest

from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.proto import rpc_pb2_grpc
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.cluster.services import flaredb_url
from plasmacloud.common.config import TLSConfig
from plasmacloud.iam.bootstrap import Outcome
from plasmacloud.iam.client import IamClient
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.iam.endpoints import iam_url
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import scratch_netns_spec
from plasmacloud.lab.services import SERVICES, ServiceSpec
from plasmacloud.lab.spec import scratch_spec
from plasmacloud.provision import pki

from .conftest import READY_TIMEOUT_S, etcdctl_env

pytestmark = pytest.mark.slow

# an Allow on the app/ subtree of Chainfire and reads of FlareDB's main database
APP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["chainfire:*", "flaredb:Query"],
            "Resource": ["key/app/*", "db/main"],
        }
    ],
}
# reads of the app/ subtree and of FlareDB, nothing else
READ_APP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["chainfire:Range", "flaredb:Query"],
            "Resource": ["key/app/*", "db/main"],
        }
    ],
}
ALICE_PW = "alice-password-1"
# the Verifier's documented revocation delay is 5 s plus one fetch; poll well past it
REVOCATION_DEADLINE_S = 20.0
# services ship audit records every second; allow for a loaded machine
AUDIT_DEADLINE_S = 30.0


@dataclass
class IamLab:
    lab: Lab
    sa_id: str
    sa_secret: str

    def iam_urls(self) -> list[str]:
        return [iam_url(c.me, True) for c in self.lab.configs()]

    def flaredb_urls(self) -> list[str]:
        return [flaredb_url(c) for c in self.lab.configs()]

    @property
    def tls(self) -> TLSConfig:
        return self.lab.operator_tls

    def ssl_ctx(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.tls.ca_file))
        ctx.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
        return ctx


async def _setup(lab: Lab) -> tuple[str, str]:
    """Policy ``app``, user alice and service account bot with it; bot's id and secret."""
    admin = AdminCredentials.read(lab.layout.admin_credentials)
    urls = [iam_url(c.me, True) for c in lab.configs()]
    async with IamClient(urls, lab.layout.ca_file) as c:
        await c.login_admin(admin)
        await c.call("POST", "/v1/policies", json={"name": "app", "document": APP_POLICY})
        await c.call(
            "POST", "/v1/users", json={"name": "alice", "password": ALICE_PW, "policies": ["app"]}
        )
        sa = await c.call("POST", "/v1/service-accounts", json={"name": "bot"})
        await c.call("PUT", "/v1/service-accounts/bot/policies/app")
    return str(sa["client_id"]), str(sa["client_secret"])


@contextlib.contextmanager
def started_iam_lab(
    root: Path, backend: str = "process", services: tuple[ServiceSpec, ...] = SERVICES
) -> Iterator[IamLab]:
    """A new lab as `plasma lab up` runs it (IAM everywhere, auth on; ``services`` to
    change how they start), admin bootstrapped, alice and the service account set up, on
    ``backend`` ("process" or "netns"); torn down afterwards."""
    spec = scratch_netns_spec() if backend == "netns" else scratch_spec()
    lab = Lab.open(root, spec, services=services, backend=backend)
    try:
        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        # waiting for ready bootstrapped IAM: the operator's certificate needs its principal
        assert lab.iam_bootstrap == Outcome.CREATED
        yield IamLab(lab, *asyncio.run(_setup(lab)))
    finally:
        lab.down()


@pytest.fixture(scope="module")
def iam_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamLab]:
    with started_iam_lab(tmp_path_factory.mktemp("iamlab")) as started:
        assert asyncio.run(started.lab.bootstrap_iam()) == Outcome.EXISTING  # idempotent
        mode = started.lab.layout.admin_credentials.stat().st_mode & 0o777
        assert mode == 0o600
        yield started


async def password_token(urls: list[str], cafile: Path, user: str, password: str) -> str:
    async with IamClient(urls, cafile) as c:
        body = await c.login({"grant_type": "password", "username": user, "password": password})
    return str(body["access_token"])


async def put_answer(lab: IamLab, node: int, key: bytes, token: str) -> tuple[grpc.StatusCode, str]:
    """Put ``key`` on one node's Chainfire with ``token``; the status code and details."""
    cfg = lab.lab.configs()[node]
    async with dial(client_target(cfg), lab.tls) as ch:
        try:
            await rpc_pb2_grpc.KVStub(ch).Put(
                pb.PutRequest(key=key, value=b"v"), metadata=(("token", token),), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def put_as(lab: IamLab, node: int, key: bytes, token: str) -> grpc.StatusCode:
    """Put ``key`` on one node's Chainfire with ``token``; the status code it answers."""
    return (await put_answer(lab, node, key, token))[0]


DENIED = (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")


async def flaredb_as(lab: IamLab, url: str, sql: str, token: str, write: bool = False) -> int:
    """One FlareDB request with a bearer token; the HTTP status."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as s:
        if write:
            req = s.post(url + "/db/execute", json=[sql], headers=headers, ssl=lab.ssl_ctx())
        else:
            req = s.get(url + "/db/query", params={"q": sql}, headers=headers, ssl=lab.ssl_ctx())
        async with req as r:
            return r.status


async def test_token_from_node01_works_on_node03_and_policy_decides(iam_lab: IamLab) -> None:
    urls = iam_lab.iam_urls()
    token = await password_token(urls[:1], iam_lab.lab.layout.ca_file, "alice", ALICE_PW)
    assert await put_as(iam_lab, 2, b"app/x", token) == grpc.StatusCode.OK
    node03_db = iam_lab.flaredb_urls()[2]
    assert await flaredb_as(iam_lab, node03_db, "SELECT 1", token) == 200
    # outside the policy: etcd's refusal, and FlareDB's 403
    assert await put_answer(iam_lab, 2, b"other/x", token) == DENIED
    assert await flaredb_as(iam_lab, node03_db, "CREATE TABLE t (x)", token, write=True) == 403
    # garbage is not a token anywhere
    assert await put_as(iam_lab, 0, b"app/y", "not-a-token") == grpc.StatusCode.UNAUTHENTICATED
    assert await flaredb_as(iam_lab, node03_db, "SELECT 1", "not-a-token") == 401


def client_cert(lab: IamLab, directory: Path, name: str) -> TLSConfig:
    """A client certificate with CN ``name`` from the lab's CA (as `plasma pki` issues)."""
    issued = pki.issue_client(pki.load_ca(lab.lab.layout.pki_dir), directory, name)
    return TLSConfig(ca_file=lab.tls.ca_file, cert_file=issued.cert_path, key_file=issued.key_path)


def etcdctl_as(
    lab: IamLab, cert: TLSConfig, *args: str, endpoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Real etcdctl with this certificate and no --user: the certificate is the identity
    (``endpoint``: only this one instead of every node's)."""
    env = etcdctl_env(lab.lab)
    if endpoint is not None:
        env["ETCDCTL_ENDPOINTS"] = endpoint
    for name in ("ETCDCTL_USER", "ETCDCTL_CERT", "ETCDCTL_KEY"):
        env.pop(name, None)
    tls = [f"--cert={cert.cert_file}", f"--key={cert.key_file}"]
    return subprocess.run(
        ["etcdctl", "--command-timeout=10s", *tls, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def curl_as(cert: TLSConfig, url: str, *args: str) -> tuple[int, str]:
    """Real curl with this client certificate and no credentials: (HTTP status, body)."""
    tls = [
        "--cacert",
        str(cert.ca_file),
        "--cert",
        str(cert.cert_file),
        "--key",
        str(cert.key_file),
    ]
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", *tls, "-w", "\n%{http_code}", *args, url],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def test_a_certificate_is_the_iam_principal_its_cn_names(iam_lab: IamLab, tmp_path: Path) -> None:
    """A user with a read-only policy, known by its certificate only: etcdctl and curl
    read, their writes are refused with etcd's and FlareDB's answers, and audited."""
    admin = AdminCredentials.read(iam_lab.lab.layout.admin_credentials)

    async def create_reader() -> None:
        async with IamClient(iam_lab.iam_urls(), iam_lab.lab.layout.ca_file) as c:
            await c.login_admin(admin)
            doc = {"name": "read-app", "document": READ_APP_POLICY}
            await c.call("POST", "/v1/policies", json=doc)
            await c.call("POST", "/v1/users", json={"name": "reader", "policies": ["read-app"]})

    asyncio.run(create_reader())
    alice = f"alice:{ALICE_PW}"
    assert etcdctl(iam_lab, "put", "app/cert-read", "v1", user=alice).returncode == 0
    reader = client_cert(iam_lab, tmp_path, "reader")
    got = etcdctl_as(iam_lab, reader, "get", "app/cert-read", "--print-value-only")
    assert (got.returncode, got.stdout.strip()) == (0, "v1"), got.stderr
    put = etcdctl_as(iam_lab, reader, "put", "app/cert-read", "v2")
    assert put.returncode != 0 and "etcdserver: permission denied" in put.stderr
    other = etcdctl_as(iam_lab, reader, "get", "other/x")
    assert other.returncode != 0 and "etcdserver: permission denied" in other.stderr

    for db in iam_lab.flaredb_urls():  # a follower forwards the weak read to the leader
        code, body = curl_as(reader, db + "/db/query?q=SELECT+1&level=weak")
        assert code == 200 and json.loads(body)["results"][0]["values"] == [[1]], body
    ddl = ["-H", "Content-Type: application/json", "-d", '["CREATE TABLE r (x)"]']
    code, body = curl_as(reader, db + "/db/execute", *ddl)
    assert code == 403 and "reader may not flaredb:Execute on db/main" in body

    # recorded as a token call of that principal would be
    wanted = {
        ("chainfire:Range", "key/app/cert-read", "Allow"),
        ("chainfire:Put", "key/app/cert-read", "Deny"),
        ("flaredb:Query", "db/main", "Allow"),
        ("flaredb:Execute", "db/main", "Deny"),
    }

    async def audited() -> set[tuple[str, str, str]]:
        seen: set[tuple[str, str, str]] = set()
        async with IamClient(iam_lab.iam_urls(), iam_lab.lab.layout.ca_file) as c:
            await c.login_admin(admin)
            deadline = time.monotonic() + AUDIT_DEADLINE_S
            while time.monotonic() < deadline and not wanted <= seen:
                await asyncio.sleep(0.5)
                params = {"sub": "user:reader", "limit": "500"}
                items = (await c.call("GET", "/v1/audit", params=params))["items"]
                seen = {(e["action"], e["resource"], e["decision"]) for e in items}
        return seen

    assert wanted <= asyncio.run(audited())


def test_the_operator_certificate_is_an_admin_by_policy(iam_lab: IamLab) -> None:
    """What the lab's tooling relies on: no token, the operator's certificate, anything."""
    op = iam_lab.tls
    put = etcdctl_as(iam_lab, op, "put", "anywhere/op", "1")
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    members = etcdctl_as(iam_lab, op, "member", "list")
    assert members.returncode == 0 and members.stdout.count(", started, ") == 3
    # a follower hands a membership change to the leader with its node certificate:
    # allowed through to the leader's own answer
    leader = asyncio.run(iam_lab.lab.probe()).leader_node
    nodes = iam_lab.lab.spec.node_ids
    follower = iam_lab.lab.spec.client_endpoints()[
        nodes.index(next(n for n in nodes if n != leader))
    ]
    removed = etcdctl_as(iam_lab, op, "member", "remove", "abc", endpoint=follower)
    assert "etcdserver: member not found" in removed.stderr, removed.stderr
    deleted = etcdctl_as(iam_lab, op, "del", "anywhere/op")
    assert deleted.stdout.strip() == "1", deleted.stderr
    ddl = ["-H", "Content-Type: application/json", "-d", '["CREATE TABLE op (x)"]']
    code, _ = curl_as(op, iam_lab.flaredb_urls()[0] + "/db/execute", *ddl)
    assert code == 200

    async def operator_user() -> dict[str, object]:
        admin = AdminCredentials.read(iam_lab.lab.layout.admin_credentials)
        async with IamClient(iam_lab.iam_urls(), iam_lab.lab.layout.ca_file) as c:
            await c.login_admin(admin)
            return dict(await c.call("GET", "/v1/users/operator"))

    assert asyncio.run(operator_user())["groups"] == ["admins"]  # by policy, not by name


def test_a_node_certificate_cannot_touch_user_data(iam_lab: IamLab) -> None:
    node = iam_lab.lab.configs()[0].tls  # node01's own certificate
    assert etcdctl(iam_lab, "put", "app/node-read", "v", user=f"alice:{ALICE_PW}").returncode == 0
    for args in (["get", "app/node-read"], ["put", "app/node-read", "x"], ["get", "", "--prefix"]):
        done = etcdctl_as(iam_lab, node, *args)
        assert done.returncode != 0 and "etcdserver: permission denied" in done.stderr, args
    db = iam_lab.flaredb_urls()[1]
    ddl = ["-H", "Content-Type: application/json", "-d", '["CREATE TABLE n (x)"]']
    code, body = curl_as(node, db + "/db/execute", *ddl)
    assert code == 403 and "node01 may not flaredb:Execute" in body


def test_a_certificate_naming_no_principal_is_refused(iam_lab: IamLab, tmp_path: Path) -> None:
    stranger = client_cert(iam_lab, tmp_path, "stranger")
    # etcd 3.4 with --client-cert-auth answers a CN that is no user the same way
    got = etcdctl_as(iam_lab, stranger, "get", "app/x")
    assert got.returncode != 0 and "etcdserver: permission denied" in got.stderr
    code, body = curl_as(stranger, iam_lab.flaredb_urls()[1] + "/db/query?q=SELECT+1")
    assert code == 403 and "names no enabled IAM user" in body


def etcdctl(lab: IamLab, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    env = etcdctl_env(lab.lab)
    env.pop("ETCDCTL_USER", None)
    if user is not None:
        env["ETCDCTL_USER"] = user
    return subprocess.run(
        ["etcdctl", "--command-timeout=10s", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_etcdctl_user_logs_in_through_iam(iam_lab: IamLab) -> None:
    alice = f"alice:{ALICE_PW}"
    ok = etcdctl(iam_lab, "put", "app/from-etcdctl", "v", user=alice)
    assert (ok.returncode, ok.stdout.strip()) == (0, "OK"), ok.stderr
    got = etcdctl(iam_lab, "get", "app/from-etcdctl", "--print-value-only", user=alice)
    assert got.stdout.strip() == "v", got.stderr
    denied = etcdctl(iam_lab, "put", "other/x", "v", user=alice)
    assert denied.returncode != 0 and "etcdserver: permission denied" in denied.stderr
    # the lab's admin, exactly as `plasma lab env` exports it, may do anything
    admin = AdminCredentials.read(iam_lab.lab.layout.admin_credentials)
    members = etcdctl(iam_lab, "member", "list", user=f"{admin.username}:{admin.password}")
    assert members.returncode == 0 and members.stdout.count(", started, ") == 3


def test_client_credentials_token_from_curl_drives_etcdctl_and_flaredb(iam_lab: IamLab) -> None:
    ca = str(iam_lab.tls.ca_file)
    form = ["-d", "grant_type=client_credentials", "-u", f"{iam_lab.sa_id}:{iam_lab.sa_secret}"]
    got = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca,
            *form,
            iam_lab.iam_urls()[1] + "/oauth2/token",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    token = json.loads(got.stdout)["access_token"]
    as_bot = f"{iam_lab.sa_id}:{token}"
    put = etcdctl(iam_lab, "put", "app/from-bot", "1", user=as_bot)
    assert put.returncode == 0, put.stderr
    refused = etcdctl(iam_lab, "del", "other/x", user=as_bot)
    assert "etcdserver: permission denied" in refused.stderr

    # the token decides, not the (admin) operator certificate the connection presents
    bearer = ["-H", f"Authorization: Bearer {token}"]
    db = iam_lab.flaredb_urls()[0]
    code, body = curl_as(iam_lab.tls, db + "/db/query?q=SELECT+1", *bearer)
    assert code == 200 and json.loads(body)["results"][0]["values"] == [[1]]
    ddl = ["-H", "Content-Type: application/json", "-d", "[]"]
    code, body = curl_as(iam_lab.tls, db + "/db/execute", *bearer, *ddl)
    assert code == 403 and "flaredb:Execute" in body


async def test_revoked_token_stops_working_on_every_node(iam_lab: IamLab) -> None:
    urls = iam_lab.iam_urls()
    token = await password_token(urls, iam_lab.lab.layout.ca_file, "alice", ALICE_PW)
    dbs = iam_lab.flaredb_urls()
    for node in range(3):  # accepted everywhere first (and cached by every verifier)
        assert await put_as(iam_lab, node, b"app/r", token) == grpc.StatusCode.OK
        assert await flaredb_as(iam_lab, dbs[node], "SELECT 1", token) == 200
    async with aiohttp.ClientSession() as s:
        ctx = iam_lab.ssl_ctx()
        async with s.post(urls[2] + "/oauth2/revoke", data={"token": token}, ssl=ctx) as r:
            assert r.status == 200
    refused: set[tuple[str, int]] = set()
    deadline = time.monotonic() + REVOCATION_DEADLINE_S
    while len(refused) < 6 and time.monotonic() < deadline:
        for node in range(3):
            if await put_as(iam_lab, node, b"app/r", token) == grpc.StatusCode.UNAUTHENTICATED:
                refused.add(("chainfire", node))
            if await flaredb_as(iam_lab, dbs[node], "SELECT 1", token) == 401:
                refused.add(("flaredb", node))
        await asyncio.sleep(0.5)
    assert len(refused) == 6, f"still accepted after {REVOCATION_DEADLINE_S}s: {refused}"


async def test_one_iam_node_down_leaves_login_and_verification_working(iam_lab: IamLab) -> None:
    lab = iam_lab.lab
    (rec,) = [r for r in lab.state.records("node01") if r.service == "iam"]
    os.killpg(rec.pgid, signal.SIGKILL)  # a process group this lab started
    try:
        urls = iam_lab.iam_urls()
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectionError):
                await s.get(urls[0] + "/health", ssl=iam_lab.ssl_ctx())
        # login through the clients' failover (node01 first, as most configs list it)
        token = await password_token(urls, lab.layout.ca_file, "alice", ALICE_PW)
        # node01's Chainfire and FlareDB ask their own IAM first: they must fail over
        assert await put_as(iam_lab, 0, b"app/failover", token) == grpc.StatusCode.OK
        assert await flaredb_as(iam_lab, iam_lab.flaredb_urls()[0], "SELECT 1", token) == 200
        assert await put_as(iam_lab, 0, b"other/failover", token) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    finally:
        lab.backend.start_node("node01")  # restarts only what is not running
    await lab.wait_ready(timeout=READY_TIMEOUT_S)


async def test_every_node_serves_one_issuers_discovery_and_jwks(iam_lab: IamLab) -> None:
    issuers: set[str] = set()
    key_sets: list[list[str]] = []
    async with aiohttp.ClientSession() as s:
        for url in iam_lab.iam_urls():
            ssl_ctx = ssl.create_default_context(cafile=str(iam_lab.tls.ca_file))  # no cert
            async with s.get(url + "/.well-known/openid-configuration", ssl=ssl_ctx) as r:
                disco = await r.json()
            async with s.get(disco["jwks_uri"], ssl=ssl_ctx) as r:
                key_sets.append(sorted(k["kid"] for k in (await r.json())["keys"]))
            issuers.add(disco["issuer"])
    assert issuers == {iam_lab.iam_urls()[0]}
    assert key_sets[0] and key_sets == [key_sets[0]] * 3
