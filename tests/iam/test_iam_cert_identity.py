"""Client certificates as IAM identities: IAM names the principal a CN names (to nodes
only), a Verifier resolves it once per TTL and decides with its policies, node ids are
the narrow system principal, and the bootstrap makes an operator's CN an admin."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from iam_fixtures import TlsIam

from plasmacloud.iam.authz import AuditRecord, Verifier
from plasmacloud.iam.bootstrap import Outcome, bootstrap_to_file
from plasmacloud.iam.cache import TtlCache
from plasmacloud.iam.certidentity import NODE_POLICY_NAME
from plasmacloud.iam.directory import Kind
from plasmacloud.iam.jwtcheck import TokenError
from plasmacloud.iam.passwords import FAST_FOR_TESTS
from plasmacloud.iam.service import ADMIN_GROUP, GrantError, IamService, IamSettings
from plasmacloud.iam.store import MemoryStore
from plasmacloud.iam.tokens import TokenSettings
from plasmacloud.iam.upstream import IamUnavailable

READ_APP = {
    "Statement": [
        {"Effect": "Allow", "Action": "chainfire:Range", "Resource": "key/app/*"},
        {"Effect": "Allow", "Action": "flaredb:Query", "Resource": "db/main"},
    ]
}
LOOKUP = "/v1/certificate-identities/{name}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _admin_call(tls_iam: TlsIam, method: str, path: str, body: object = None) -> int:
    headers = {"Authorization": f"Bearer {tls_iam.admin_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, tls_iam.url + path, json=body, headers=headers, ssl=tls_iam.anonymous_ctx
        ) as r,
    ):
        return r.status


async def _principals(tls_iam: TlsIam) -> None:
    """Policy ``read-app``; user reader and service account bot with it; user off, disabled."""
    assert await _admin_call(
        tls_iam, "POST", "/v1/policies", {"name": "read-app", "document": READ_APP}
    ) in (200, 201)
    for kind, name in (("users", "reader"), ("service-accounts", "bot"), ("users", "off")):
        body = {"name": name, "policies": ["read-app"]}
        assert await _admin_call(tls_iam, "POST", f"/v1/{kind}", body) == 201, name
    assert await _admin_call(tls_iam, "PATCH", "/v1/users/off", {"disabled": True}) == 200


def lookups(tls_iam: TlsIam, status: str) -> float:
    """Certificate identity lookups IAM has answered with ``status``."""
    value = tls_iam.svc.metrics.registry.get_sample_value(
        "iam_http_requests_total",
        {"method": "GET", "route": LOOKUP, "status": status},
    )
    return value or 0.0


async def test_iam_names_a_cns_principal_and_policies_to_nodes_only(tls_iam: TlsIam) -> None:
    await _principals(tls_iam)
    async with aiohttp.ClientSession() as http:

        async def lookup(name: str, ctx: object) -> tuple[int, dict[str, object]]:
            async with http.get(f"{tls_iam.url}/v1/certificate-identities/{name}", ssl=ctx) as r:
                return r.status, await r.json()

        status, reader = await lookup("reader", tls_iam.node_ctx)
        assert status == 200
        assert (reader["sub"], reader["username"], reader["groups"]) == (
            "user:reader",
            "reader",
            [],
        )
        assert reader["policies"] == [{"name": "read-app", "document": READ_APP}]
        status, bot = await lookup("bot", tls_iam.node_ctx)
        assert (status, bot["sub"], bot["client_id"]) == (200, "sa:bot", "bot")
        for nobody in ("off", "stranger", "a%20b"):  # disabled, unknown, not a name
            status, body = await lookup(nobody, tls_iam.node_ctx)
            assert status == 404 and "no enabled user or service account" in str(body), nobody
        # only a node's certificate may ask: an operator's or none is refused
        for ctx in (tls_iam.operator_ctx, tls_iam.anonymous_ctx):
            status, _ = await lookup("reader", ctx)
            assert status == 403


async def test_a_users_name_wins_and_a_disabled_user_does_not_fall_back(
    tls_iam: TlsIam,
) -> None:
    svc, d = tls_iam.svc, tls_iam.svc.directory
    await _principals(tls_iam)
    assert await _admin_call(tls_iam, "POST", "/v1/service-accounts", {"name": "reader"}) == 201
    found = await svc.certificate_subject("reader")
    assert found is not None and found.sub == "user:reader"
    assert await _admin_call(tls_iam, "POST", "/v1/service-accounts", {"name": "off"}) == 201
    assert await svc.certificate_subject("off") is None
    assert (await d.get(Kind.SERVICE_ACCOUNT, "off")) is not None


async def test_verifier_resolves_a_cn_once_per_ttl_and_decides_with_its_policies(
    tls_iam: TlsIam,
) -> None:
    await _principals(tls_iam)
    clock = Clock()
    audited: list[AuditRecord] = []
    v = Verifier(
        [tls_iam.url],
        ssl_context=tls_iam.node_ctx,
        clock=clock,
        policy_ttl=10.0,
        negative_ttl=1.0,
        audit=audited.append,
    )
    try:
        p = await v.authenticate_certificate("reader")
        assert (p.sub, p.username, p.auth, p.token) == ("user:reader", "reader", "certificate", "")
        for _ in range(50):  # every later call is answered from the cache
            p = await v.authenticate_certificate("reader")
            assert (await v.authorize(p, "chainfire:Range", "key/app/x")).allowed
        denied = await v.authorize(p, "chainfire:Put", "key/app/x")
        assert not denied.allowed and denied.reason == "implicit-deny"
        assert lookups(tls_iam, "200") == 1
        # audited as a token call of that principal would be
        assert [(r.sub, r.action, r.decision.allowed) for r in audited[-2:]] == [
            ("user:reader", "chainfire:Range", True),
            ("user:reader", "chainfire:Put", False),
        ]
        sa = await v.authenticate_certificate("bot")
        assert (sa.sub, sa.client_id) == ("sa:bot", "bot")

        # unknown names are refused, and asked again only after negative_ttl
        for _ in range(3):
            with pytest.raises(TokenError) as unknown:
                await v.authenticate_certificate("stranger")
            assert unknown.value.reason == "unknown_identity"
        assert lookups(tls_iam, "404") == 1
        with pytest.raises(TokenError):
            await v.authenticate_certificate("not a name")  # no principal can be named so
        assert lookups(tls_iam, "404") == 1
        clock.now += 1.5
        with pytest.raises(TokenError):
            await v.authenticate_certificate("stranger")
        assert lookups(tls_iam, "404") == 2

        # disabling applies within the policy TTL, as a policy edit does for tokens
        assert await _admin_call(tls_iam, "PATCH", "/v1/users/reader", {"disabled": True}) == 200
        assert (await v.authenticate_certificate("reader")).sub == "user:reader"  # cached
        clock.now += 10.5
        with pytest.raises(TokenError) as gone:
            await v.authenticate_certificate("reader")
        assert gone.value.reason == "unknown_identity"
        # a principal resolved before it was disabled is no longer granted anything
        assert not (await v.authorize(p, "chainfire:Range", "key/app/x")).allowed
    finally:
        await v.close()


async def test_node_ids_are_the_narrow_system_principal_without_asking_iam() -> None:
    # nothing listens there: a node's calls never need IAM
    audited: list[AuditRecord] = []
    v = Verifier(["https://127.0.0.1:9"], node_ids=["node01"], audit=audited.append)
    try:
        node = await v.authenticate_certificate("node01")
        assert (node.sub, node.auth) == ("node:node01", "node")

        async def allowed(action: str, resource: str, prefix: bool = False) -> bool:
            return (await v.authorize(node, action, resource, prefix=prefix)).allowed

        # what members do to each other: forward membership changes and weak reads
        assert await allowed("chainfire:MemberAdd", "cluster")
        assert await allowed("chainfire:MemberRemove", "cluster")
        assert await allowed("flaredb:Query", "db/main")
        # nothing of the users', nor the public keys where IAM's records were before the
        # system keyspace (IAM reaches its records through SystemKV)
        refused = (
            ("chainfire:Range", "key/app/x", False),
            ("chainfire:Range", "key/", True),
            ("chainfire:Range", "key//plasmacloud/", True),
            ("chainfire:Put", "key/app/x", False),
            ("chainfire:DeleteRange", "key//plasmacloud/iamx", False),
            ("chainfire:Watch", "key//plasmacloud/iam/", True),
            ("chainfire:Range", "key//plasmacloud/iam/users/", True),
            ("chainfire:Txn", "key//plasmacloud/iam/meta/bootstrap", False),
            ("chainfire:MemberList", "cluster", False),
            ("chainfire:Snapshot", "cluster", False),
            ("flaredb:Execute", "db/main", False),
        )
        for action, resource, prefix in refused:
            assert not await allowed(action, resource, prefix), (action, resource)
        # the cluster's own traffic is not audited, a node's refusal is
        assert {r.decision.allowed for r in audited} == {False}
        assert len(audited) == len(refused) and audited[0].decision.policy is None
        allowed_by = (await v.authorize(node, "flaredb:Query", "db/main")).policy
        assert allowed_by == NODE_POLICY_NAME  # the system policy, not an IAM one
        assert {r.sub for r in audited} == {"node:node01"}
        with pytest.raises(TokenError) as unreachable:
            await v.authenticate_certificate("operator")  # not a node: IAM is asked
        assert unreachable.value.reason == "iam_unavailable"
    finally:
        await v.close()


async def test_bootstrap_makes_an_operators_cn_an_admin_user_on_every_run(tmp_path: Path) -> None:
    svc = IamService(
        MemoryStore(),
        IamSettings(node_id="node01", tokens=TokenSettings(issuer="x"), hashing=FAST_FOR_TESTS),
    )
    out = tmp_path / "admin.json"
    assert await bootstrap_to_file(svc, out) == Outcome.CREATED  # without operators first
    assert await svc.directory.get(Kind.USER, "operator") is None
    # a cluster bootstrapped before the operator was listed gets it on the next run
    assert await bootstrap_to_file(svc, out, certificate_admins=["operator"]) == Outcome.EXISTING
    operator = await svc.certificate_subject("operator")
    assert operator is not None and operator.groups == (ADMIN_GROUP,)
    policies = await svc.directory.effective_policies("user:operator")
    assert [name for name, _ in policies] == ["AdministratorAccess"]
    # a certificate-only user: no password logs it in
    with pytest.raises(GrantError):
        await svc.password_grant("operator", "", "", "127.0.0.1")
    assert not await svc.ensure_certificate_admin("operator")  # nothing to change
    await svc.directory.update(Kind.USER, "operator", lambda e: e.model_copy(update={"groups": []}))
    assert await svc.ensure_certificate_admin("operator")  # back in the admins group
    again = await svc.certificate_subject("operator")
    assert again is not None and again.groups == (ADMIN_GROUP,)
    assert json.loads(out.read_text())["username"] == "admin"


async def test_cache_shares_a_fetch_and_keeps_a_value_while_iam_is_away() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(lambda _: 10.0, clock, max_stale=60.0)
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    waiting = [asyncio.create_task(cache.get("k", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1] * 5 and calls == 1

    async def away() -> int:
        raise IamUnavailable("down")

    clock.now += 30  # expired, IAM away: the last value still answers within max_stale
    assert await cache.get("k", away) == 1
    clock.now += 31
    with pytest.raises(IamUnavailable):
        await cache.get("k", away)
    with pytest.raises(IamUnavailable):
        await cache.get("never-fetched", away)
