"""The IAM REST API on one in-process server (127.0.0.71) with the in-memory store."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from iam_fixtures import ClusterFactory
from openapi_spec_validator import validate

from plasmacloud.iam.bootstrap import Outcome, bootstrap_to_file
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.iam.lockout import LockoutPolicy
from plasmacloud.iam.passwords import FAST_FOR_TESTS
from plasmacloud.iam.service import IamService, IamSettings
from plasmacloud.iam.store import MemoryStore
from plasmacloud.iam.tokens import TokenSettings

APP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "AppKeys",
            "Effect": "Allow",
            "Action": ["chainfire:Range", "chainfire:Put"],
            "Resource": "key/app/*",
        },
        {"Sid": "NoSecret", "Effect": "Deny", "Action": "*", "Resource": "key/app/secret"},
    ],
}


async def test_public_documents(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    status, health = await c.call("GET", "/health", None)
    assert status == 200 and health["status"] == "ok"
    status, disco = await c.call("GET", "/.well-known/openid-configuration", None)
    assert status == 200
    assert disco["issuer"] == "http://127.0.0.71:8080"
    assert disco["jwks_uri"] == f"{c.url}/.well-known/jwks.json"
    assert disco["token_endpoint"] == f"{c.url}/oauth2/token"
    status, jwks = await c.call("GET", "/.well-known/jwks.json", None)
    assert status == 200 and jwks["keys"] and all(k["alg"] == "ES256" for k in jwks["keys"])
    status, spec = await c.call("GET", "/openapi.json", None)
    assert status == 200 and spec["openapi"].startswith("3.")
    assert spec["paths"]["/v1/users"]["post"]["x-required-action"] == "iam:CreateUser"
    assert "CreatePolicy" in spec["components"]["schemas"]
    assert "/oauth2/token" in spec["paths"]


async def test_bootstrap_is_idempotent(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster(2)
    assert await c.nodes[0].svc.bootstrap() is None
    assert await c.nodes[1].svc.bootstrap() is None
    status, users = await c.call("GET", "/v1/users", await c.token())
    assert status == 200 and [u["name"] for u in users["items"]] == ["admin"]
    assert all("password_hash" not in u for u in users["items"])


async def test_grants_password_client_credentials_refresh(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    async with c.http.post(
        f"{c.url}/oauth2/token",
        data={"grant_type": "password", "username": "admin", "password": c.admin.password},
    ) as r:
        body = await r.json()
        assert r.status == 200 and body["token_type"] == "Bearer" and body["refresh_token"]
        assert r.headers["Cache-Control"] == "no-store"
    status, me = await c.call("GET", "/v1/self", body["access_token"])
    assert status == 200 and me["sub"] == "user:admin" and me["groups"] == ["admins"]
    async with c.http.post(
        f"{c.url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
    ) as r:
        refreshed = await r.json()
        assert r.status == 200 and refreshed["refresh_token"] != body["refresh_token"]
    async with c.http.post(
        f"{c.url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
    ) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
    # client_secret_basic
    pair = f"{c.admin.client_id}:{c.admin.client_secret}".encode()
    basic = "Basic " + base64.b64encode(pair).decode()
    async with c.http.post(
        f"{c.url}/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic},
    ) as r:
        cc = await r.json()
        assert r.status == 200 and "refresh_token" not in cc
    status, me = await c.call("GET", "/v1/self", cc["access_token"])
    assert me["sub"] == f"sa:{c.admin.client_id}" and me["client_id"] == c.admin.client_id
    for bad in (
        {"grant_type": "password", "username": "admin", "password": "wrong-password"},
        {"grant_type": "password", "username": "nobody", "password": "whatever1"},
        {"grant_type": "client_credentials", "client_id": "admin-client", "client_secret": "x"},
        {"grant_type": "implicit"},
        {"grant_type": "password"},
    ):
        async with c.http.post(f"{c.url}/oauth2/token", data=bad) as r:
            assert r.status in (400, 401), bad
            assert (await r.json())["error"] in (
                "invalid_grant",
                "invalid_client",
                "unsupported_grant_type",
                "invalid_request",
            )


async def test_crud_attach_and_enforce(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    admin = await c.token()
    status, pol = await c.call(
        "POST", "/v1/policies", admin, json={"name": "app-rw", "document": APP_POLICY}
    )
    assert status == 201, pol
    status, _ = await c.call("POST", "/v1/groups", admin, json={"name": "devs"})
    assert status == 201
    status, _ = await c.call("POST", "/v1/roles", admin, json={"name": "reader"})
    assert status == 201
    status, user = await c.call(
        "POST", "/v1/users", admin, json={"name": "alice", "password": "correct horse"}
    )
    assert status == 201 and user["name"] == "alice" and "password_hash" not in user
    status, _ = await c.call("PUT", "/v1/groups/devs/members/alice", admin)
    assert status == 200
    status, grp = await c.call("PUT", "/v1/groups/devs/policies/app-rw", admin)
    assert status == 200 and grp["policies"] == ["app-rw"]
    status, usr = await c.call("PUT", "/v1/users/alice/roles/reader", admin)
    assert status == 200 and usr["roles"] == ["reader"] and usr["groups"] == ["devs"]

    alice = await c.token(grant_type="password", username="alice", password="correct horse")
    status, mine = await c.call("GET", "/v1/self/policies", alice)
    assert status == 200 and [p["name"] for p in mine["policies"]] == ["app-rw"]
    # alice is no admin
    status, err = await c.call("GET", "/v1/users", alice)
    assert status == 403 and err["error"] == "forbidden"
    status, _ = await c.call("GET", "/v1/users", None)
    assert status == 401
    status, _ = await c.call("GET", "/v1/users", "not.a.token")
    assert status == 401

    async def sim(resource: str, action: str = "chainfire:Put") -> dict[str, Any]:
        status, body = await c.call(
            "POST",
            "/v1/policy/simulate",
            admin,
            json={"principal": "user:alice", "action": action, "resource": resource},
        )
        assert status == 200, body
        return body

    assert (await sim("key/app/x"))["decision"] == "Allow"
    assert (await sim("key/app/x"))["statement"] == "AppKeys"
    assert (await sim("key/other/x"))["reason"] == "implicit-deny"
    denied = await sim("key/app/secret")
    assert (denied["decision"], denied["statement"]) == ("Deny", "NoSecret")
    assert (await sim("key/app/x", "chainfire:DeleteRange"))["decision"] == "Deny"
    # group-conditioned inline policy: plasma:groups is a list, any member matches
    by_group = {
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*",
             "Condition": {"StringEquals": {"plasma:groups": "devs"}}}
        ]
    }  # fmt: skip
    for who, expected in (("user:alice", "Allow"), (f"sa:{c.admin.client_id}", "Deny")):
        status, body = await c.call(
            "POST", "/v1/policy/simulate", admin,
            json={"principal": who, "action": "x:y", "resource": "r", "policies": [by_group]},
        )  # fmt: skip
        assert status == 200 and body["decision"] == expected, body
    status, err = await c.call(
        "POST", "/v1/policy/simulate", admin,
        json={"principal": "user:ghost", "action": "x:y", "resource": "r"},
    )  # fmt: skip
    assert status == 404 and err["errors"][0]["field"] == "principal"

    # update and delete; a policy in use cannot be deleted
    status, upd = await c.call("PATCH", "/v1/users/alice", admin, json={"disabled": True})
    assert status == 200 and upd["disabled"] is True
    status, err = await c.call("DELETE", "/v1/policies/app-rw", admin)
    assert status == 409 and "groups/devs" in err["message"]
    status, _ = await c.call("DELETE", "/v1/groups/devs/policies/app-rw", admin)
    assert status == 200
    status, _ = await c.call("DELETE", "/v1/groups/devs/members/alice", admin)
    assert status == 200
    status, _ = await c.call("DELETE", "/v1/policies/app-rw", admin)
    assert status == 204
    status, _ = await c.call("DELETE", "/v1/users/alice", admin)
    assert status == 204
    status, _ = await c.call("GET", "/v1/users/alice", admin)
    assert status == 404


async def test_pagination(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    admin = await c.token()
    for i in range(5):
        status, _ = await c.call("POST", "/v1/groups", admin, json={"name": f"g{i}"})
        assert status == 201
    seen: list[str] = []
    token: str | None = None
    for _ in range(10):
        params = {"limit": "2", **({"page_token": token} if token else {})}
        status, page = await c.call("GET", "/v1/groups", admin, params=params)
        assert status == 200 and len(page["items"]) <= 2
        seen += [g["name"] for g in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == ["admins", "g0", "g1", "g2", "g3", "g4"]
    for bad in ("0", "501", "x", "-1"):
        status, err = await c.call("GET", "/v1/groups", admin, params={"limit": bad})
        assert status == 400 and err["errors"][0]["field"] == "limit"


async def test_service_account_lifecycle(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    admin = await c.token()
    status, sa = await c.call("POST", "/v1/service-accounts", admin, json={"name": "ci-bot"})
    assert status == 201 and sa["client_id"] == "ci-bot" and len(sa["client_secret"]) > 30
    form = {"grant_type": "client_credentials", "client_id": "ci-bot"}
    await c.token(**form, client_secret=sa["client_secret"])
    status, fresh = await c.call("POST", "/v1/service-accounts/ci-bot/secret", admin)
    assert status == 200 and fresh["client_secret"] != sa["client_secret"]
    async with c.http.post(
        f"{c.url}/oauth2/token", data={**form, "client_secret": sa["client_secret"]}
    ) as r:
        assert r.status == 401 and (await r.json())["error"] == "invalid_client"
    await c.token(**form, client_secret=fresh["client_secret"])
    status, got = await c.call("GET", "/v1/service-accounts/ci-bot", admin)
    assert status == 200 and "secret_hash" not in got and "client_secret" not in got


async def test_bad_input_is_refused_without_state_change(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    admin = await c.token()
    bad_doc = {
        "Statement": [{"Effect": "Allow", "Action": "a:b", "Resource": "*"}, {"Effect": "Perhaps"}]
    }
    status, err = await c.call(
        "POST", "/v1/policies", admin, json={"name": "p", "document": bad_doc}
    )
    assert status == 422
    fields = [e["field"] for e in err["errors"]]
    assert "document.Statement[1].Effect" in fields
    assert "document.Statement[1].Action" in fields
    assert 'Statement[1].Effect: must be "Allow" or "Deny"' in err["message"]
    for name in (
        "x'; DROP TABLE users;--",
        '{"$ne": null}',
        "../../etc/passwd",
        "a b",
        "",
        "é" * 3,
        "a" * 65,
    ):
        status, err = await c.call(
            "POST", "/v1/users", admin, json={"name": name, "password": "long enough"}
        )
        assert status == 422, name
        assert err["errors"][0]["field"] == "name"
    status, err = await c.call(
        "POST", "/v1/users", admin, json={"name": "bob", "password": "short"}
    )
    assert status == 422 and err["errors"][0]["field"] == "password"
    status, err = await c.call(
        "POST",
        "/v1/users",
        admin,
        json={"name": "bob", "password": "long enough", "groups": ["nope"]},
    )
    assert status == 422 and err["errors"][0]["field"] == "groups"
    status, err = await c.call(
        "POST", "/v1/users", admin, json={"name": "bob", "password": "long enough", "admin": True}
    )
    assert status == 422 and err["errors"][0]["field"] == "admin"
    many = {"name": "bob", "password": "long enough", "policies": [f"p{i}" for i in range(101)]}
    status, err = await c.call("POST", "/v1/users", admin, json=many)
    assert status == 422 and err["errors"][0]["field"] == "policies"
    for i in range(100):
        await c.call("POST", "/v1/groups", admin, json={"name": f"g{i}"})
        status, _ = await c.call("PUT", f"/v1/groups/g{i}/members/admin", admin)
        assert status == (200 if i < 99 else 422)  # admin is already in "admins"
    status, err = await c.call("POST", "/v1/users", admin, data=b"{not json")
    assert status == 400
    status, err = await c.call("GET", "/v1/users/..%2F..%2Fetc", admin)
    assert status in (400, 404)
    status, err = await c.call("POST", "/v1/users", admin, json=["a", "list"])
    assert status == 422
    status, users = await c.call("GET", "/v1/users", admin)
    assert [u["name"] for u in users["items"]] == ["admin"]
    assert len(users["items"][0]["groups"]) == 100
    status, pols = await c.call("GET", "/v1/policies", admin)
    assert [p["name"] for p in pols["items"]] == ["AdministratorAccess"]
    status, _ = await c.call("POST", "/v1/groups", admin, json={"name": "admins"})
    assert status == 409


async def test_brute_force_lockout(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster(2, lockout=LockoutPolicy(max_failures=3, lock_seconds=600, ip_burst=100))
    admin = await c.token()
    await c.call("POST", "/v1/users", admin, json={"name": "carol", "password": "the right one"})

    async def login(password: str, node: int) -> tuple[int, dict[str, Any]]:
        async with c.http.post(
            f"{c.nodes[node].url}/oauth2/token",
            data={"grant_type": "password", "username": "carol", "password": password},
        ) as r:
            return r.status, await r.json()

    # Spreading guesses across nodes does not help: the counter is in the shared store.
    for i in range(3):
        status, body = await login(f"guess-{i}", node=i % 2)
        assert status == 400 and body["error"] == "invalid_grant"
    status, body = await login("the right one", node=1)
    assert status == 429 and "locked" in body["error_description"]
    status, user = await c.call("GET", "/v1/users/carol", admin)
    assert status == 200 and user["disabled"] is False  # no other state change
    status, metrics = await c.call("GET", "/metrics", None, node=1)
    assert 'iam_login_failures_total{reason="locked"} 1.0' in metrics
    # Service accounts are not locked out (their secrets cannot be guessed, and a lockout
    # would let anyone who knows a client id shut the service out).
    bad = {"grant_type": "client_credentials", "client_id": c.admin.client_id}
    for _ in range(6):
        async with c.http.post(f"{c.url}/oauth2/token", data={**bad, "client_secret": "x"}) as r:
            assert r.status == 401
    await c.token()


async def test_ip_rate_limit(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster(lockout=LockoutPolicy(ip_burst=4, ip_per_second=0.01, max_failures=100))
    statuses = []
    for i in range(8):
        async with c.http.post(
            f"{c.url}/oauth2/token",
            data={"grant_type": "password", "username": f"u{i}", "password": "whatever-pw"},
        ) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert (await r.json())["error"] == "slow_down" and "Retry-After" in r.headers
    assert statuses[:4] == [400] * 4 and statuses[4:] == [429] * 4
    # successes never use the budget: the admin client logs in as often as it likes
    c2 = await iam_cluster(lockout=LockoutPolicy(ip_burst=2, ip_per_second=0.01))
    for _ in range(10):
        await c2.token()


async def test_revocation_and_audit_and_metrics(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    admin = await c.token()
    victim = await c.token()
    assert (await c.call("GET", "/v1/self", victim))[0] == 200
    async with c.http.post(f"{c.url}/oauth2/revoke", data={"token": victim}) as r:
        assert r.status == 200
    status, err = await c.call("GET", "/v1/self", victim)
    assert status == 401 and "revoked" in err["message"]
    status, revoked = await c.call("GET", "/v1/revocations", None)
    assert status == 200 and len(revoked["revoked"]) == 1
    status, audit = await c.call("GET", "/v1/audit", admin, params={"action": "iam:ReadAudit"})
    assert status == 200
    await c.call("GET", "/v1/users", admin)
    status, audit = await c.call("GET", "/v1/audit", admin, params={"action": "iam:ListUsers"})
    entry = audit["items"][-1]
    assert (entry["sub"], entry["decision"], entry["resource"]) == (
        f"sa:{c.admin.client_id}",
        "Allow",
        "iam/users",
    )
    status, metrics = await c.call("GET", "/metrics", None)
    assert 'iam_tokens_issued_total{grant_type="client_credentials"} 2.0' in metrics
    assert 'iam_authz_decisions_total{effect="Allow"}' in metrics
    assert "iam_token_verify_seconds_count" in metrics


async def test_key_rotation_over_the_api(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster(2)
    before = await c.token()
    status, rotated = await c.call("POST", "/v1/keys/rotate", before)
    assert status == 201
    after = await c.token(node=1)
    status, jwks = await c.call("GET", "/.well-known/jwks.json", None, node=1)
    kids = {k["kid"] for k in jwks["keys"]}
    assert rotated["kid"] in kids and len(kids) == 2
    assert (await c.call("GET", "/v1/self", before, node=1))[0] == 200
    assert (await c.call("GET", "/v1/self", after, node=0))[0] == 200


async def test_self_service_password_and_group_members(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    admin = await c.token()
    await c.call("POST", "/v1/users", admin, json={"name": "erin", "password": "first-password"})
    await c.call("PUT", "/v1/groups/admins/members/erin", admin)
    status, members = await c.call("GET", "/v1/groups/admins/members", admin)
    assert status == 200
    assert set(members["members"]) == {"users/admin", "users/erin", "service-accounts/admin-client"}
    await c.call("DELETE", "/v1/groups/admins/members/erin", admin)
    erin = await c.token(grant_type="password", username="erin", password="first-password")
    status, err = await c.call(
        "POST", "/v1/self/password", erin,
        json={"current_password": "wrong-one", "new_password": "second-password"},
    )  # fmt: skip
    assert status == 403
    status, err = await c.call(
        "POST", "/v1/self/password", erin,
        json={"current_password": "first-password", "new_password": "short"},
    )  # fmt: skip
    assert status == 422 and err["errors"][0]["field"] == "new_password"
    status, _ = await c.call(
        "POST", "/v1/self/password", erin,
        json={"current_password": "first-password", "new_password": "second-password"},
    )  # fmt: skip
    assert status == 204
    await c.token(grant_type="password", username="erin", password="second-password")
    status, err = await c.call(
        "POST", "/v1/self/password", admin,  # a service account has no password
        json={"current_password": "x", "new_password": "second-password"},
    )  # fmt: skip
    assert status == 403


async def test_half_done_bootstrap_is_taken_over_later(tmp_path: Path) -> None:
    clock = [1_800_000_000.0]
    store = MemoryStore()
    settings = IamSettings("n1", TokenSettings(issuer="http://x"), hashing=FAST_FOR_TESTS)
    svc = IamService(store, settings, clock=lambda: clock[0])

    def crash(_: AdminCredentials) -> None:
        raise RuntimeError("operator's disk full")

    with pytest.raises(RuntimeError):
        await svc.bootstrap(deliver=crash)  # claimed, admin created, file never written
    out = tmp_path / "admin.json"
    assert await bootstrap_to_file(svc, out) == Outcome.LOST  # someone may still be at it
    clock[0] += 61
    assert await bootstrap_to_file(svc, out) == Outcome.CREATED
    creds = AdminCredentials.read(out)
    assert await svc.password_grant("admin", creds.password, "", "127.0.0.1")
    assert await bootstrap_to_file(svc, out) == Outcome.EXISTING
    clock[0] += 3600
    assert await svc.bootstrap() is None  # done is done, however long ago


async def test_openapi_document_is_valid_openapi(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster()
    status, spec = await c.call("GET", "/openapi.json", None)
    assert status == 200
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema
    ops = [op for path in spec["paths"].values() for op in path.values()]
    assert len({op["operationId"] for op in ops}) == len(ops)
