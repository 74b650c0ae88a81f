"""Signing keys, access/refresh tokens, rotation and revocation (store in memory)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plasmacloud.iam.jwtcheck import TokenError
from plasmacloud.iam.keys import KeyRing
from plasmacloud.iam.store import MemoryStore
from plasmacloud.iam.tokens import REFRESH_PREFIX, Subject, TokenService, TokenSettings

ALICE = Subject("user:alice", "alice", groups=("devs",), roles=("reader",))


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make(
    store: MemoryStore | None = None, clock: Clock | None = None
) -> tuple[TokenService, KeyRing, Clock]:
    clock = clock or Clock()
    store = store or MemoryStore()
    ring = KeyRing(store, token_ttl=900, leeway=30, cache_seconds=0, clock=clock)
    svc = TokenService(store, ring, TokenSettings(issuer="https://iam.test"), clock=clock)
    return svc, ring, clock


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_issue_and_verify_roundtrip() -> None:
    svc, _, _ = make()
    issued = await svc.issue(ALICE, scope="openid")
    claims = await svc.verify(issued.access_token)
    assert claims["sub"] == "user:alice"
    assert claims["aud"] == "plasmacloud"
    assert claims["iss"] == "https://iam.test"
    assert claims["groups"] == ["devs"] and claims["roles"] == ["reader"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["jti"] == issued.jti
    header = jwt.get_unverified_header(issued.access_token)
    assert header["alg"] == "ES256" and header["kid"]


async def test_expired_token_is_refused() -> None:
    svc, _, clock = make()
    issued = await svc.issue(ALICE)
    clock.now += 900 + 31
    with pytest.raises(TokenError) as exc:
        await svc.verify(issued.access_token)
    assert exc.value.reason == "expired"


async def test_forged_signature_is_refused() -> None:
    svc, _, _ = make()
    issued = await svc.issue(ALICE)
    head, payload, _sig = issued.access_token.split(".")
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    claims["sub"] = "user:admin"
    forged_payload = _b64(claims)
    with pytest.raises(TokenError) as exc:
        await svc.verify(f"{head}.{forged_payload}.{_sig}")
    assert exc.value.reason == "bad_signature"
    # Signed by a key of the right type that is not ours, with our kid.
    other = ec.generate_private_key(ec.SECP256R1())
    kid = jwt.get_unverified_header(issued.access_token)["kid"]
    foreign = jwt.encode(claims, other, algorithm="ES256", headers={"kid": kid})
    with pytest.raises(TokenError) as exc:
        await svc.verify(foreign)
    assert exc.value.reason == "bad_signature"
    assert payload  # the untouched original still verifies
    assert (await svc.verify(issued.access_token))["sub"] == "user:alice"


async def test_alg_none_and_other_algorithms_are_refused() -> None:
    svc, _, _ = make()
    issued = await svc.issue(ALICE)
    kid = jwt.get_unverified_header(issued.access_token)["kid"]
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'kid': kid, 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(TokenError) as exc:
        await svc.verify(unsigned)
    assert exc.value.reason == "bad_algorithm"
    hs = jwt.encode(
        claims, "secret-but-symmetric-key-0123456789", algorithm="HS256", headers={"kid": kid}
    )
    with pytest.raises(TokenError) as exc:
        await svc.verify(hs)
    assert exc.value.reason == "bad_algorithm"
    # RS256 is on the allow-list, but our key is ES256: algorithm confusion is refused.
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": kid})
    with pytest.raises(TokenError) as exc:
        await svc.verify(rs)
    assert exc.value.reason == "bad_algorithm"


async def test_wrong_kid_and_garbage_are_refused() -> None:
    svc, _, _ = make()
    issued = await svc.issue(ALICE)
    claims = jwt.decode(issued.access_token, options={"verify_signature": False})
    other = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims, other, algorithm="ES256", headers={"kid": "not-a-kid"})
    with pytest.raises(TokenError) as exc:
        await svc.verify(token)
    assert exc.value.reason == "unknown_kid"
    for garbage in ("", "abc", "a.b.c", "😀.😀.😀"):
        with pytest.raises(TokenError):
            await svc.verify(garbage)


async def test_wrong_audience_or_issuer_is_refused() -> None:
    svc, ring, clock = make()
    other = TokenService(
        MemoryStore(), ring, TokenSettings(issuer="https://evil.test", audience="x"), clock=clock
    )
    token = (await other.issue(ALICE)).access_token
    with pytest.raises(TokenError) as exc:
        await svc.verify(token)
    assert exc.value.reason == "wrong_audience_or_issuer"


async def test_revoked_token_is_refused_and_listed_until_expiry() -> None:
    svc, _, clock = make()
    issued = await svc.issue(ALICE)
    keep = await svc.issue(ALICE)
    assert await svc.revoke(issued.access_token)
    with pytest.raises(TokenError) as exc:
        await svc.verify(issued.access_token)
    assert exc.value.reason == "revoked"
    assert (await svc.verify(keep.access_token))["jti"] == keep.jti
    assert [r["jti"] for r in await svc.revocations()] == [issued.jti]
    clock.now += 900 + 61
    assert await svc.revocations() == []  # pruned once the token is dead anyway


async def test_refresh_token_is_single_use_and_revocable() -> None:
    svc, _, clock = make()
    issued = await svc.issue(ALICE, scope="openid")
    assert issued.refresh_token
    grant = await svc.redeem_refresh(issued.refresh_token)
    assert (grant.sub, grant.scope) == ("user:alice", "openid")
    with pytest.raises(TokenError):
        await svc.redeem_refresh(issued.refresh_token)
    second = await svc.issue(ALICE)
    assert second.refresh_token and await svc.revoke(second.refresh_token)
    with pytest.raises(TokenError):
        await svc.redeem_refresh(second.refresh_token)
    assert not await svc.revoke("never-issued")
    third = await svc.issue(ALICE)
    assert third.refresh_token
    clock.now += 8 * 3600 + 1
    with pytest.raises(TokenError) as exc:
        await svc.redeem_refresh(third.refresh_token)
    assert "expired" in str(exc.value)


async def test_refresh_reuse_revokes_the_whole_family() -> None:
    svc, _, _ = make()
    login = await svc.issue(ALICE)
    assert login.refresh_token
    grant = await svc.redeem_refresh(login.refresh_token)
    rotated = await svc.issue(ALICE, family=grant.family)  # what the token endpoint returns
    other_login = await svc.issue(ALICE)
    assert rotated.refresh_token and other_login.refresh_token
    # The old token shows up again (stolen copy): the session it belongs to ends.
    with pytest.raises(TokenError) as exc:
        await svc.redeem_refresh(login.refresh_token)
    assert "reused" in str(exc.value)
    with pytest.raises(TokenError) as exc:
        await svc.redeem_refresh(rotated.refresh_token)
    assert "revoked" in str(exc.value)
    # another login of the same user is untouched
    assert (await svc.redeem_refresh(other_login.refresh_token)).sub == "user:alice"


async def test_concurrent_redemptions_let_one_win() -> None:
    svc, _, _ = make()
    login = await svc.issue(ALICE)
    assert login.refresh_token
    results = await asyncio.gather(
        *(svc.redeem_refresh(login.refresh_token) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1


async def test_expired_refresh_state_is_pruned() -> None:
    store = MemoryStore()
    svc, _, clock = make(store)
    for _ in range(99):
        await svc.issue(ALICE)
    clock.now += 8 * 3600 + 1
    await svc.issue(ALICE)  # the 100th issue sweeps
    assert len(await store.range(REFRESH_PREFIX)) == 1


async def test_rotation_keeps_old_key_until_its_tokens_expire() -> None:
    svc, ring, clock = make()
    old = await svc.issue(ALICE)
    old_kid = jwt.get_unverified_header(old.access_token)["kid"]
    new_key = await ring.rotate()
    assert new_key.kid != old_kid
    new = await svc.issue(ALICE)
    assert jwt.get_unverified_header(new.access_token)["kid"] == new_key.kid
    kids = {k["kid"] for k in (await ring.jwks())["keys"]}
    assert kids == {old_kid, new_key.kid}
    assert (await svc.verify(old.access_token))["jti"] == old.jti
    clock.now += 900 + 31
    kids = {k["kid"] for k in (await ring.jwks())["keys"]}
    assert kids == {new_key.kid}
    assert all("d" not in k for k in (await ring.jwks())["keys"])  # never a private part


async def test_two_nodes_share_keys_through_the_store() -> None:
    store = MemoryStore()
    clock = Clock()
    a, ring_a, _ = make(store, clock)
    b, ring_b, _ = make(store, clock)
    # Both start at once: exactly one signing key wins.
    ka, kb = await ring_a.signing_key(), await ring_b.signing_key()
    assert ka.kid == kb.kid
    token = (await a.issue(ALICE)).access_token
    assert (await b.verify(token))["sub"] == "user:alice"
    await ring_b.rotate()
    token_b = (await b.issue(ALICE)).access_token
    assert (await a.verify(token_b))["sub"] == "user:alice"
    await b.revoke(token)
    with pytest.raises(TokenError):
        await a.verify(token)


async def test_keys_rotate_by_age_without_an_operator() -> None:
    clock = Clock()
    store = MemoryStore()
    ring = KeyRing(store, token_ttl=900, cache_seconds=0, max_age=86400, clock=clock)
    other = KeyRing(store, token_ttl=900, cache_seconds=0, max_age=86400, clock=clock)
    first = await ring.signing_key()
    clock.now += 3600
    assert (await other.signing_key()).kid == first.kid
    clock.now += 86400
    second = await other.signing_key()  # too old: rotated on use
    assert second.kid != first.kid
    assert (await ring.signing_key()).kid == second.kid  # both nodes agree
    assert {k["kid"] for k in (await ring.jwks())["keys"]} == {first.kid, second.kid}
    clock.now += 931
    assert {k["kid"] for k in (await ring.jwks())["keys"]} == {second.kid}


async def test_made_up_kids_do_not_flood_the_store() -> None:
    store = MemoryStore()
    clock = Clock()
    ring = KeyRing(store, token_ttl=900, cache_seconds=5, clock=clock)
    svc = TokenService(store, ring, TokenSettings(issuer="https://iam.test"), clock=clock)
    await svc.issue(ALICE)
    reads = 0
    real_range = store.range

    async def counting(prefix: str, start_after: str | None = None, limit: int = 0) -> Any:
        nonlocal reads
        reads += prefix.endswith("/keys/")
        return await real_range(prefix, start_after, limit)

    store.range = counting  # type: ignore[method-assign]
    other = ec.generate_private_key(ec.SECP256R1())
    bogus = [
        jwt.encode({"sub": "x"}, other, algorithm="ES256", headers={"kid": f"k{i}"})
        for i in range(51)
    ]
    with pytest.raises(TokenError):
        await svc.verify(bogus[0])
    after_first = reads
    for token in bogus[1:]:
        with pytest.raises(TokenError):
            await svc.verify(token)
    assert reads == after_first  # 50 more made-up kids within a second: no store read
    clock.now += 1.5
    with pytest.raises(TokenError):
        await svc.verify(bogus[0])
    assert reads == after_first + 1  # a second later one re-read is allowed again
