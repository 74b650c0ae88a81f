"""Brute force through Chainfire and FlareDB: they log users in at IAM on the clients' behalf,
so IAM counts failed logins against the client address they forward
(``X-Forwarded-For``), and believes that header only from a cluster node's certificate.

The fixture's IAM slows an address down after 3 failures (``429``).
"""

from __future__ import annotations

import ssl

import aiohttp
import pytest
from iam_fixtures import TlsIam

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.iam_auth import IamAuthorizer
from plasmacloud.iam.authz import Verifier
from plasmacloud.iam.jwtcheck import TokenError

BAD = {"grant_type": "password", "username": "ghost", "password": "not-the-password"}


async def login(iam: TlsIam, ctx: ssl.SSLContext, forwarded: str | None = None) -> int:
    """One failing password login; the HTTP status IAM answers."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{iam.url}/oauth2/token", data=BAD, headers=headers, ssl=ctx) as r,
    ):
        return r.status


async def test_a_node_forwarding_addresses_gets_them_limited_one_by_one(tls_iam: TlsIam) -> None:
    node = tls_iam.node_ctx
    guesser = [await login(tls_iam, node, "127.0.0.201") for _ in range(4)]
    assert guesser == [400, 400, 400, 429]
    # the node's other clients, and the node itself, are not slowed down by the guesser
    assert await login(tls_iam, node, "127.0.0.202") == 400
    assert await login(tls_iam, node) == 400


@pytest.mark.parametrize("who", ["anonymous", "operator"])
async def test_the_header_is_ignored_without_a_node_certificate(tls_iam: TlsIam, who: str) -> None:
    ctx = tls_iam.anonymous_ctx if who == "anonymous" else tls_iam.operator_ctx
    # a fresh address per attempt buys nothing: all count against the real peer
    statuses = [await login(tls_iam, ctx, f"127.0.0.{210 + i}") for i in range(4)]
    assert statuses == [400, 400, 400, 429]


async def test_a_malformed_forwarded_address_counts_against_the_node(tls_iam: TlsIam) -> None:
    node = tls_iam.node_ctx
    for bad in ("127.0.0.220, 127.0.0.221", "not-an-address", "127.0.0.222:5000"):
        assert await login(tls_iam, node, bad) == 400
    assert await login(tls_iam, node) == 429


async def test_chainfires_authenticate_forwards_the_callers_address(tls_iam: TlsIam) -> None:
    v = Verifier([tls_iam.url], ssl_context=tls_iam.node_ctx)
    authorizer = IamAuthorizer(v)
    try:
        for _ in range(3):
            with pytest.raises(errors.EtcdError) as refused:
                await authorizer.authenticate("ghost", "nope", "127.0.0.230")
            assert refused.value is errors.AUTH_FAILED
        with pytest.raises(TokenError) as limited:
            await v.password_login("ghost", "nope", "127.0.0.230")
        assert limited.value.reason == "rate_limited"
        # FlareDB's Basic logins go the same way; another client is unaffected
        with pytest.raises(TokenError) as other:
            await v.password_login("ghost", "nope", "127.0.0.231")
        assert other.value.reason == "invalid_credentials"
    finally:
        await v.close()
