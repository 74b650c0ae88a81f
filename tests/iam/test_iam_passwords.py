"""Secrets at rest: argon2id for passwords, SHA-256 digests for generated client secrets."""

from __future__ import annotations

import argon2
import pytest
from argon2 import PasswordHasher, extract_parameters

from plasmacloud.iam.passwords import (
    FAST_FOR_TESTS,
    Hasher,
    HashParams,
    check_secret,
    decoy_hash,
    digest_secret,
    new_client_secret,
)


async def test_passwords_use_argon2id() -> None:
    h = Hasher(FAST_FOR_TESTS)
    encoded = await h.hash("correct horse")
    assert encoded.startswith("$argon2id$") and "correct horse" not in encoded
    assert await h.verify(encoded, "correct horse")
    assert not await h.verify(encoded, "correct horsE")
    assert not await h.verify(None, "no such user")  # unknown user: same work, still no
    assert not await h.verify("not-a-hash", "x")


@pytest.mark.parametrize("params", [HashParams(), FAST_FOR_TESTS])
def test_the_unknown_user_decoy_costs_what_a_real_hash_does(params: HashParams) -> None:
    ph = PasswordHasher(params.time_cost, params.memory_cost, params.parallelism)
    real, decoy = ph.hash("a password"), decoy_hash(ph)
    # the same cost parameters and lengths, so a verify does the same work...
    assert extract_parameters(decoy) == extract_parameters(real)
    assert [len(part) for part in decoy.split("$")] == [len(part) for part in real.split("$")]
    # ...and no secret matches it (random salt and digest, a new one each time)
    with pytest.raises(argon2.exceptions.VerifyMismatchError):
        ph.verify(decoy, "no such user")
    assert decoy_hash(ph) != decoy


async def test_a_hasher_starts_without_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_self: PasswordHasher, _secret: str) -> str:
        raise AssertionError("hashed at start")

    monkeypatch.setattr(PasswordHasher, "hash", refuse)
    h = Hasher(FAST_FOR_TESTS)
    assert not await h.verify(None, "no such user")


def test_client_secrets() -> None:
    secret, stored = new_client_secret()
    assert len(secret) >= 43 and secret not in stored
    assert check_secret(stored, secret)
    assert not check_secret(stored, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not check_secret(None, secret)
    assert not check_secret("", "")
    assert stored == digest_secret(secret) and new_client_secret()[0] != secret
