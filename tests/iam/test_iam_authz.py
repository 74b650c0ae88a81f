"""The enforcement library against live in-process IAM nodes (token from one, checked by others)."""

from __future__ import annotations

import ast
import asyncio
import base64
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from iam_fixtures import Cluster, ClusterFactory, free_port

import plasmacloud.iam.authz as authz_module
from plasmacloud.common.config import NodeConfig
from plasmacloud.iam.authz import (
    AuditRecord,
    Verifier,
    chainfire_action,
    chainfire_range,
    chainfire_resource,
    flaredb_action,
    flaredb_resource,
    token_from_metadata,
)
from plasmacloud.iam.endpoints import iam_urls, issuer_for
from plasmacloud.iam.jwtcheck import TokenError

APP_ONLY = {
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["chainfire:Put", "chainfire:Range"],
            "Resource": "key/app/*",
        },
        {"Effect": "Allow", "Action": "flaredb:Query", "Resource": "db/main"},
    ]
}


async def _user_with_app_policy(c: Cluster) -> str:
    admin = await c.token()
    await c.call("POST", "/v1/policies", admin, json={"name": "app", "document": APP_ONLY})
    await c.call(
        "POST",
        "/v1/users",
        admin,
        json={"name": "alice", "password": "alice-password", "policies": ["app"]},
    )
    return await c.token(node=0, grant_type="password", username="alice", password="alice-password")


def test_naming() -> None:
    assert chainfire_action("Put") == "chainfire:Put"
    assert chainfire_resource(b"app/x") == "key/app/x"
    assert chainfire_resource(b"\xff") == "key/\\xff"
    assert (flaredb_action("Execute"), flaredb_resource("main")) == ("flaredb:Execute", "db/main")
    assert chainfire_range(b"app/x") == ("key/app/x", False)
    assert chainfire_range(b"app/", b"app0") == ("key/app/", True)  # --prefix app/
    assert chainfire_range(b"a", b"\x00") == ("key/", True)  # --from-key: everything after
    assert chainfire_range(b"app/a", b"app/m") == ("key/app/", True)  # widened, never narrowed


def test_authz_imports_no_service_package() -> None:
    tree = ast.parse(Path(authz_module.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + [
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    ]
    assert not [m for m in imported if "chainfire" in m or "flaredb" in m or ".lab" in m]


async def test_token_from_node1_is_enforced_via_node2_and_node3(
    iam_cluster: ClusterFactory,
) -> None:
    c = await iam_cluster(3)
    token = await _user_with_app_policy(c)
    records: list[AuditRecord] = []
    v = Verifier([c.nodes[1].url, c.nodes[2].url], audit=records.append, revocation_refresh=0)
    try:
        p = await v.authenticate(token)
        assert (p.sub, p.username) == ("user:alice", "alice")
        assert (await v.authorize(p, "chainfire:Put", "key/app/x")).allowed
        refused = await v.authorize(p, "chainfire:Put", "key/other/x")
        assert not refused.allowed and refused.reason == "implicit-deny"
        assert not (await v.authorize(p, "chainfire:DeleteRange", "key/app/x")).allowed
        assert (await v.authorize(p, "flaredb:Query", "db/main")).allowed
        app_prefix, is_prefix = chainfire_range(b"app/", b"app0")
        assert (await v.authorize(p, "chainfire:Range", app_prefix, prefix=is_prefix)).allowed
        everything, _ = chainfire_range(b"", b"\x00")
        assert not (await v.authorize(p, "chainfire:Range", everything, prefix=True)).allowed
        assert not (await v.authorize(p, "flaredb:Execute", "db/main")).allowed
        assert [(r.action, r.decision.allowed) for r in records][:2] == [
            ("chainfire:Put", True),
            ("chainfire:Put", False),
        ]
        # revoked on node01 -> refused by the verifier (refresh interval 0 here)
        async with c.http.post(f"{c.nodes[0].url}/oauth2/revoke", data={"token": token}) as r:
            assert r.status == 200
        with pytest.raises(TokenError) as exc:
            await v.authenticate(token)
        assert exc.value.reason == "revoked"
    finally:
        await v.close()


async def test_revocation_is_seen_within_the_refresh_interval(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster(2)
    token = await c.token()
    now = [time.time()]
    v = Verifier([c.nodes[1].url], revocation_refresh=5.0, clock=lambda: now[0])
    try:
        await v.authenticate(token)
        async with c.http.post(f"{c.nodes[0].url}/oauth2/revoke", data={"token": token}) as r:
            assert r.status == 200
        await v.authenticate(token)  # still cached: the documented delay
        now[0] += 5.0
        with pytest.raises(TokenError):
            await v.authenticate(token)
    finally:
        await v.close()


async def test_bad_tokens_are_refused_locally(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    good = await c.token()
    v = Verifier([c.url])
    try:
        await v.authenticate(good)
        claims = jwt.decode(good, options={"verify_signature": False})
        kid = jwt.get_unverified_header(good)["kid"]
        forged = jwt.encode(
            {**claims, "sub": "user:root"},
            ec.generate_private_key(ec.SECP256R1()),
            algorithm="ES256",
            headers={"kid": kid},
        )
        _, body, _ = good.split(".")
        none_alg = jwt.api_jws.base64url_encode(b'{"alg":"none","kid":"%s"}' % kid.encode())
        cases = {
            forged: "bad_signature",
            f"{none_alg.decode()}.{body}.": "bad_algorithm",
            "garbage": "malformed",
        }
        for tok, reason in cases.items():
            with pytest.raises(TokenError) as exc:
                await v.authenticate(tok)
            assert exc.value.reason == reason
    finally:
        await v.close()
    later = Verifier([c.url], clock=lambda: time.time() + 3600)
    try:
        with pytest.raises(TokenError) as exc:
            await later.authenticate(good)
        assert exc.value.reason == "expired"
    finally:
        await later.close()


async def test_unknown_kid_refetch_is_bounded_and_rotation_is_picked_up(
    iam_cluster: ClusterFactory,
) -> None:
    c = await iam_cluster(2)
    old = await c.token()
    now = [time.time()]
    v = Verifier([c.nodes[1].url], jwks_min_refresh=5.0, clock=lambda: now[0])
    fetches = 0
    real = v._upstream.get_json

    async def counting(path: str, token: str | None = None) -> object:
        nonlocal fetches
        fetches += path == "/.well-known/jwks.json"
        return await real(path, token)

    v._upstream.get_json = counting  # type: ignore[method-assign]
    try:
        await v.authenticate(old)
        assert fetches == 1
        stranger = jwt.encode(
            {"sub": "x"}, ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": "zz"}
        )
        for _ in range(20):
            with pytest.raises(TokenError):
                await v.authenticate(stranger)
        assert fetches == 1  # random kids do not make it hammer IAM
        status, _ = await c.call("POST", "/v1/keys/rotate", old)
        assert status == 201
        new = await c.token(node=0)
        now[0] += 5.0
        assert (await v.authenticate(new)).sub.startswith("sa:")
        assert fetches == 2
        assert (await v.authenticate(old)).jti  # old key still in JWKS
    finally:
        await v.close()


async def test_one_dead_iam_url_is_skipped(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster(2)
    token = await _user_with_app_policy(c)
    dead = f"http://127.0.0.79:{free_port('127.0.0.79')}"
    v = Verifier([dead, c.nodes[1].url], http_timeout=2.0)
    try:
        p = await v.authenticate(token)
        assert (await v.authorize(p, "chainfire:Range", "key/app/a")).allowed
    finally:
        await v.close()


async def test_iam_unreachable_at_start_is_a_clean_refusal() -> None:
    dead = f"http://127.0.0.78:{free_port('127.0.0.78')}"
    v = Verifier([dead], http_timeout=1.0)
    token = jwt.encode(
        {"sub": "x"}, ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": "k"}
    )
    try:
        with pytest.raises(TokenError) as exc:
            await v.authenticate(token)
        assert exc.value.reason == "iam_unavailable"
    finally:
        await v.close()


async def test_password_login_is_cached_and_refused_when_wrong(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster(2)
    await _user_with_app_policy(c)
    v = Verifier([c.nodes[1].url], revocation_refresh=0)
    try:
        p = await v.password_login("alice", "alice-password")
        again = await v.password_login("alice", "alice-password")
        assert p.sub == "user:alice" and again.jti == p.jti  # no second IAM login
        assert (await v.authorize(p, "chainfire:Put", "key/app/1")).allowed
        for user, password in (("alice", "nope-nope"), ("nobody", "whatever1"), ("", "")):
            with pytest.raises(TokenError) as exc:
                await v.password_login(user, password)
            assert exc.value.reason == "invalid_credentials"
        # the cached token is revoked: the cache does not outlive revocation, and the
        # right password gets a new token (revoking a token does not disable the user)
        async with c.http.post(f"{c.url}/oauth2/revoke", data={"token": p.token}) as r:
            assert r.status == 200
        with pytest.raises(TokenError):
            await v.authenticate(p.token)
        fresh = await v.password_login("alice", "alice-password")
        assert fresh.jti != p.jti
    finally:
        await v.close()


async def test_policy_changes_apply_after_the_cache_ttl(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    token = await _user_with_app_policy(c)
    now = [time.time()]
    v = Verifier([c.url], policy_ttl=10.0, clock=lambda: now[0])
    try:
        p = await v.authenticate(token)
        assert (await v.authorize(p, "chainfire:Put", "key/app/x")).allowed
        admin = await c.token()
        deny = {"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}
        await c.call("POST", "/v1/policies", admin, json={"name": "stop", "document": deny})
        status, _ = await c.call("PUT", "/v1/users/alice/policies/stop", admin)
        assert status == 200
        assert (await v.authorize(p, "chainfire:Put", "key/app/x")).allowed  # cached
        now[0] += 10.0
        decision = await v.authorize(p, "chainfire:Put", "key/app/x")
        assert (decision.allowed, decision.reason, decision.policy) == (
            False,
            "explicit-deny",
            "stop",
        )
    finally:
        await v.close()


def test_token_from_grpc_metadata() -> None:
    assert token_from_metadata([("token", "abc")]) == "abc"  # what etcdctl sends
    assert token_from_metadata((("authorization", "Bearer xyz"),)) == "xyz"
    assert token_from_metadata([("x-other", "1"), ("token", b"raw")]) == "raw"
    assert token_from_metadata([("authorization", "Basic Zm9v")]) is None
    assert token_from_metadata(None) is None


async def test_http_authorization_header_bearer_and_basic(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    token = await _user_with_app_policy(c)
    v = Verifier([c.url])
    try:
        assert (await v.authenticate_header(f"Bearer {token}")).username == "alice"
        basic = base64.b64encode(b"alice:alice-password").decode()
        assert (await v.authenticate_header(f"Basic {basic}")).username == "alice"
        wrong = base64.b64encode(b"alice:nope-nope").decode()
        for header, reason in (
            (f"Basic {wrong}", "invalid_credentials"),
            ("Basic !!!", "malformed"),
            ("Digest abc", "no_credentials"),
            ("", "no_credentials"),
            ("Bearer ", "no_credentials"),
        ):
            with pytest.raises(TokenError) as exc:
                await v.authenticate_header(header)
            assert exc.value.reason == reason, header
    finally:
        await v.close()


async def test_cached_verdict_still_expires(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    token = await c.token()
    now = [time.time()]
    v = Verifier([c.url], clock=lambda: now[0], revocation_refresh=0)
    try:
        await v.authenticate(token)
        await v.authenticate(token)  # served from the verified-token cache
        now[0] += 900 + 31
        with pytest.raises(TokenError) as exc:
            await v.authenticate(token)
        assert exc.value.reason == "expired"
    finally:
        await v.close()


async def test_losing_one_iam_node_keeps_login_and_verification(
    iam_cluster: ClusterFactory,
) -> None:
    c = await iam_cluster(3)
    before = await _user_with_app_policy(c)
    v = Verifier([n.url for n in c.nodes], revocation_refresh=0, http_timeout=2.0)
    try:
        await v.authenticate(before)
        await c.nodes[0].runner.cleanup()  # node01's IAM dies
        p = await v.password_login("alice", "alice-password")  # served by node02/03
        assert p.jti != (await v.authenticate(before)).jti
        assert (await v.authorize(p, "chainfire:Put", "key/app/k")).allowed
        fresh = await c.token(node=2)
        assert (await v.authenticate(fresh)).sub.startswith("sa:")
        async with c.http.post(f"{c.nodes[1].url}/oauth2/revoke", data={"token": before}) as r:
            assert r.status == 200
        with pytest.raises(TokenError):
            await v.authenticate(before)
    finally:
        await v.close()


async def test_service_call_checks(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    token = await _user_with_app_policy(c)
    v = Verifier([c.url])
    try:
        md = [("token", token)]
        ok = await v.check_etcd_call(md, "Put", [(b"app/x", b"")], "127.0.0.1")
        assert ok.status == "ok" and ok.principal is not None
        denied = await v.check_etcd_call(md, "Put", [(b"other/x", b"")])
        assert denied.status == "denied" and "key/other/x" in denied.message
        # a Txn is allowed only if every touched range is
        txn = await v.check_etcd_call(md, "Range", [(b"app/a", b""), (b"other/b", b"")])
        assert txn.status == "denied"
        prefix = await v.check_etcd_call(md, "Range", [(b"app/", b"app0")])
        assert prefix.status == "ok"
        cluster = await v.check_etcd_call(md, "MemberList", [])
        assert cluster.status == "denied" and "cluster" in cluster.message
        assert (await v.check_etcd_call([], "Put", [(b"app/x", b"")])).status == "unauthenticated"
        bad = await v.check_etcd_call([("token", "x.y.z")], "Put", [(b"app/x", b"")])
        assert bad.status == "unauthenticated"

        basic = "Basic " + base64.b64encode(b"alice:alice-password").decode()
        assert (await v.check_http_call(basic, "flaredb:Query", "db/main")).status == "ok"
        assert (await v.check_http_call(basic, "flaredb:Execute", "db/main")).status == "denied"
        assert (await v.check_http_call(None, "flaredb:Query", "db/main")).status == (
            "unauthenticated"
        )
        bearer = f"Bearer {token}"
        assert (await v.check_http_call(bearer, "flaredb:Query", "db/main")).status == "ok"
    finally:
        await v.close()


def test_urls_and_issuer_from_the_node_config() -> None:
    peers = [
        {"node_id": f"node0{i}", "hostname": f"node0{i}", "ip": f"127.0.0.1{i}"} for i in (1, 2, 3)
    ]
    cfg = NodeConfig.model_validate({**peers[1], "peers": peers, "tls": {"enabled": False}})
    assert iam_urls(cfg) == [
        "http://127.0.0.12:8443",  # this node first
        "http://127.0.0.11:8443",
        "http://127.0.0.13:8443",
    ]
    assert issuer_for(cfg) == "http://127.0.0.11:8443"  # the same on every node


async def test_concurrent_policy_misses_share_one_fetch(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    token = await _user_with_app_policy(c)
    v = Verifier([c.url])
    fetches = 0
    real = v._upstream.get_json

    async def counting(path: str, token: str | None = None) -> object:
        nonlocal fetches
        fetches += path == "/v1/self/policies"
        return await real(path, token)

    v._upstream.get_json = counting  # type: ignore[method-assign]
    try:
        p = await v.authenticate(token)
        decisions = await asyncio.gather(
            *(v.authorize(p, "chainfire:Put", f"key/app/{i}") for i in range(20))
        )
        assert all(d.allowed for d in decisions) and fetches == 1
    finally:
        await v.close()
