"""Secrets at rest: argon2id for passwords, SHA-256 digests for generated client secrets."""

from __future__ import annotations

from plasmacloud.iam.passwords import (
    FAST_FOR_TESTS,
    Hasher,
    check_secret,
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


def test_client_secrets() -> None:
    secret, stored = new_client_secret()
    assert len(secret) >= 43 and secret not in stored
    assert check_secret(stored, secret)
    assert not check_secret(stored, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not check_secret(None, secret)
    assert not check_secret("", "")
    assert stored == digest_secret(secret) and new_client_secret()[0] != secret
