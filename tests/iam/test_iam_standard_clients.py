"""Standard tools, no PlasmaCloud code: joserfc verifies our tokens from discovery + JWKS."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from typing import Any

import pytest
from iam_fixtures import ClusterFactory
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidClaimError
from joserfc.jwk import KeySet


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:  # plain HTTP client, stdlib only
        return json.loads(r.read())


def _post_form(url: str, form: dict[str, str]) -> Any:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as r:
        return json.loads(r.read())


async def test_joserfc_verifies_a_token_from_another_node(iam_cluster: ClusterFactory) -> None:
    c = await iam_cluster(2)
    token_url = (
        await asyncio.to_thread(_get, f"{c.nodes[0].url}/.well-known/openid-configuration")
    )["token_endpoint"]
    issued = await asyncio.to_thread(
        _post_form,
        token_url,
        {
            "grant_type": "client_credentials",
            "client_id": c.admin.client_id,
            "client_secret": c.admin.client_secret,
        },
    )
    # The verifying side knows only node02's discovery URL.
    disco = await asyncio.to_thread(_get, f"{c.nodes[1].url}/.well-known/openid-configuration")
    keys = KeySet.import_key_set(await asyncio.to_thread(_get, disco["jwks_uri"]))
    algs = disco["id_token_signing_alg_values_supported"]
    token = jwt.decode(issued["access_token"], keys, algorithms=algs)
    claims = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": disco["issuer"]},
        aud={"essential": True, "value": "plasmacloud"},
        exp={"essential": True},
        sub={"essential": True},
    )
    claims.validate(token.claims)
    assert token.claims["sub"] == f"sa:{c.admin.client_id}"
    assert token.header["kid"] in {k["kid"] for k in keys.as_dict()["keys"]}

    # and the same library refuses a tampered token and a wrong audience
    head, body, sig = issued["access_token"].split(".")
    tampered = f"{head}.{body[:-4]}AAAA.{sig}"
    with pytest.raises((BadSignatureError, ValueError)):
        jwt.decode(tampered, keys, algorithms=algs)
    with pytest.raises(InvalidClaimError):
        jwt.JWTClaimsRegistry(aud={"essential": True, "value": "someone-else"}).validate(
            token.claims
        )
