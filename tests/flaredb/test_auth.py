"""IAM enforcement on the HTTP API: tokens from an in-process IAM, verified locally."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pyrqlite.dbapi2 as rqlite
import pytest
from aiohttp.test_utils import make_mocked_request

from plasmacloud.flaredb.auth import EXECUTE, QUERY, Guard
from plasmacloud.flaredb.client import Client, ProgrammingError
from plasmacloud.flaredb.models import ExecuteResult, Statement
from plasmacloud.iam.authz import AuditRecord, Verifier
from plasmacloud.iam.passwords import FAST_FOR_TESTS
from plasmacloud.iam.server import start_server
from plasmacloud.iam.service import IamService, IamSettings
from plasmacloud.iam.store import MemoryStore
from plasmacloud.iam.tokens import TokenSettings

from .cluster import Cluster, make_configs
from .conftest import LiveNode, free_port, serve_node

HOSTS = ("127.0.0.62", "127.0.0.63", "127.0.0.64")

READER = {"Statement": [{"Effect": "Allow", "Action": "flaredb:Query", "Resource": "db/main"}]}
WRITER = {"Statement": [{"Effect": "Allow", "Action": "flaredb:*", "Resource": "db/*"}]}


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, auth: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": auth} if auth else {}
    data = json.dumps(body) if body is not None else None
    async with session.request(method, url, data=data, headers=headers) as r:
        return r.status, await r.json()


@contextlib.asynccontextmanager
async def iam_with_users() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A live in-process IAM with users 'ro' (Query) and 'rw' (Query+Execute); yields its
    URL and each user's ``Authorization`` header value."""
    host = "127.0.0.61"
    port = free_port(host)
    svc = IamService(
        MemoryStore(),
        IamSettings(
            node_id="node01",
            tokens=TokenSettings(issuer=f"http://{host}:{port}"),
            hashing=FAST_FOR_TESTS,
            key_cache_seconds=0.0,
        ),
    )
    runner = await start_server(svc, host, port)
    iam = f"http://{host}:{port}"
    tokens: dict[str, str] = {}
    try:
        admin = await svc.bootstrap()
        assert admin is not None
        async with aiohttp.ClientSession() as s:
            form = {
                "grant_type": "client_credentials",
                "client_id": admin.client_id,
                "client_secret": admin.client_secret,
            }
            async with s.post(iam + "/oauth2/token", data=form) as r:
                root = f"Bearer {(await r.json())['access_token']}"
            for name, doc in (("reader", READER), ("writer", WRITER)):
                status, _ = await call(
                    s, "POST", iam + "/v1/policies", {"name": name, "document": doc}, root
                )
                assert status in (200, 201)
            for user, policy in (("ro", "reader"), ("rw", "writer")):
                body = {"name": user, "password": f"{user}-password", "policies": [policy]}
                status, _ = await call(s, "POST", iam + "/v1/users", body, root)
                assert status in (200, 201)
                form = {"grant_type": "password", "username": user, "password": f"{user}-password"}
                async with s.post(iam + "/oauth2/token", data=form) as r:
                    tokens[user] = f"Bearer {(await r.json())['access_token']}"
        yield iam, tokens
    finally:
        await runner.cleanup()


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, dict[str, str]]]:
    """One node guarded by the live IAM."""
    async with iam_with_users() as (iam, tokens):
        verifier = Verifier([iam], revocation_refresh=0)
        try:
            async with serve_node(tmp_path, Guard(verifier)) as node:
                yield node, tokens
        finally:
            await verifier.close()


async def test_tokens_and_policies_decide_reads_and_writes(
    secured: tuple[LiveNode, dict[str, str]],
) -> None:
    node, tokens = secured
    u = node.url
    create = ["CREATE TABLE t (v TEXT)", "INSERT INTO t VALUES ('x')"]
    async with aiohttp.ClientSession() as s:
        status, doc = await call(s, "POST", u + "/db/execute", create)
        assert status == 401 and "authentication required" in doc["error"]
        status, doc = await call(s, "POST", u + "/db/execute", create, "Bearer not-a-jwt")
        assert status == 401
        status, doc = await call(s, "POST", u + "/db/execute", create, tokens["ro"])
        assert status == 403 and "ro may not flaredb:Execute on db/main" in doc["error"]
        status, doc = await call(s, "POST", u + "/db/execute", create, tokens["rw"])
        assert status == 200 and doc["results"][1]["rows_affected"] == 1
        status, doc = await call(s, "GET", u + "/db/query?q=SELECT+v+FROM+t", None, tokens["ro"])
        assert status == 200 and doc["results"][0]["values"] == [["x"]]
        status, doc = await call(s, "POST", u + "/db/request", ["DELETE FROM t"], tokens["ro"])
        assert status == 403
        status, doc = await call(s, "POST", u + "/db/request", ["SELECT 1"], tokens["ro"])
        assert status == 200
        basic = "Basic " + base64.b64encode(b"ro:wrong").decode()
        status, doc = await call(s, "GET", u + "/db/query?q=SELECT+1", None, basic)
        assert status == 401 and "invalid_credentials" in doc["error"]
        async with s.get(u + "/readyz") as r:  # probes need no credentials
            assert r.status == 200

    def with_client() -> None:
        rw = Client(u, token=tokens["rw"].removeprefix("Bearer "))
        (res,) = rw.execute([Statement("INSERT INTO t VALUES ('y')")])
        assert isinstance(res, ExecuteResult) and res.rows_affected == 1
        ro = Client(u, token=tokens["ro"].removeprefix("Bearer "))
        with pytest.raises(ProgrammingError, match="ro may not flaredb:Execute") as denied:
            ro.execute([Statement("DELETE FROM t")])
        assert denied.value.status == 403
        with pytest.raises(ProgrammingError, match="authentication required") as anonymous:
            Client(u).query([Statement("SELECT 1")])
        assert anonymous.value.status == 401

    await asyncio.to_thread(with_client)


async def test_pyrqlite_with_user_and_password(secured: tuple[LiveNode, dict[str, str]]) -> None:
    node, _ = secured
    port = int(node.url.rsplit(":", 1)[1])

    def work() -> None:
        conn = rqlite.connect(host="127.0.0.1", port=port, user="rw", password="rw-password")
        try:
            cur = conn.cursor()
            cur.execute("CREATE TABLE p (v INTEGER)")
            cur.execute("INSERT INTO p VALUES (?)", (7,))
            cur.execute("SELECT v FROM p")
            assert cur.fetchone()[0] == 7
        finally:
            conn.close()
        conn = rqlite.connect(host="127.0.0.1", port=port, user="ro", password="ro-password")
        try:
            with pytest.raises(rqlite.Error, match="403"):
                conn.cursor().execute("INSERT INTO p VALUES (8)")
        finally:
            conn.close()

    await asyncio.to_thread(work)


@pytest.mark.slow
async def test_followers_enforce_and_forward_credentials(tmp_path: Path) -> None:
    """Three real nodes with --iam-url: a follower checks the token, forwards a weak read
    with the caller's credentials to the leader, and hands writes to Raft."""
    async with iam_with_users() as (iam, tokens):
        cluster = Cluster(make_configs(tmp_path, HOSTS), iam_urls=[iam])
        try:
            await cluster.start_all()
            follower = cluster.followers(await cluster.leader())[0]
            u = cluster.url(follower)
            async with aiohttp.ClientSession() as s:
                status, doc = await call(s, "POST", u + "/db/execute", ["CREATE TABLE f (x)"])
                assert status == 401
                status, doc = await call(
                    s, "POST", u + "/db/execute", ["CREATE TABLE f (x)"], tokens["rw"]
                )
                assert status == 200 and doc["results"] == [{}]
                status, doc = await call(
                    s,
                    "GET",
                    u + "/db/query?q=SELECT+count(*)+FROM+f&level=weak",
                    None,
                    tokens["ro"],
                )
                assert status == 200 and doc["results"][0]["values"] == [[0]], doc
        finally:
            await cluster.stop_all()


class PeerTransport:
    """The TLS transport aiohttp hands the handler: the verified client certificate."""

    def __init__(self, common_name: str | None) -> None:
        subject = ((("commonName", common_name),),) if common_name else ()
        self.cert = {"subject": subject} if common_name else None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.cert if name == "peercert" else default


async def test_a_certificate_is_decided_by_the_principal_its_cn_names(
    cert_verifier: tuple[Verifier, list[AuditRecord]],
) -> None:
    verifier, audited = cert_verifier  # certificate lookups need no IAM (tests/conftest.py)
    guard = Guard(verifier)

    async def answer(cn: str | None, kind: str, auth: str | None = None) -> tuple[int, str]:
        headers = {"Authorization": auth} if auth else {}
        request = make_mocked_request(
            "GET", "/db/query", headers=headers, transport=PeerTransport(cn)
        )
        refused = await guard.check(request, kind)
        return (200, "") if refused is None else (refused.status, refused.text or "")

    assert await answer("reader", QUERY) == (200, "")
    status, body = await answer("reader", EXECUTE)
    assert status == 403 and "reader may not flaredb:Execute on db/main" in body
    assert [(r.sub, r.action, r.decision.allowed) for r in audited] == [
        ("user:reader", "flaredb:Query", True),
        ("user:reader", "flaredb:Execute", False),
    ]
    status, body = await answer("stranger", QUERY)
    assert status == 403 and "names no enabled IAM user" in body
    status, body = await answer(None, QUERY)  # no certificate, no credentials
    assert status == 401 and "authentication required" in body
    status, _ = await answer("reader", QUERY, auth="Bearer garbage")  # the header wins
    assert status == 401
    # a node may forward reads to the leader, and nothing else; IAM is not asked
    assert await answer("node01", QUERY) == (200, "")
    assert (await answer("node01", EXECUTE))[0] == 403
    status, body = await answer("offline", QUERY)  # IAM unreachable for the lookup
    assert status == 503 and "certificate identity lookup" in body
