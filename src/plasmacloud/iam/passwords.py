"""Secrets at rest: passwords with argon2id (off the event loop), client secrets with SHA-256.

Client secrets are 256 random bits that IAM generates itself, so nobody can guess them
offline; a slow hash would only make every client-credentials login cost ~90 ms of CPU.
Passwords are chosen by people and get argon2id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import ARGON2_VERSION


@dataclass(frozen=True, slots=True)
class HashParams:
    """argon2id cost: OWASP's recommended m=19 MiB, t=2, p=1.

    argon2-cffi's default (64 MiB, t=3, p=4) measured 0.7-1 s per hash on the 2-core lab
    machine under load, i.e. one login per second per core; OWASP's profile is ~8x
    cheaper and still its recommended minimum.
    """

    time_cost: int = 2
    memory_cost: int = 19456
    parallelism: int = 1


# Cheap parameters for tests only: hashing at full cost would dominate the suite.
FAST_FOR_TESTS = HashParams(time_cost=1, memory_cost=1024, parallelism=1)


class Hasher:
    """Hashes and verifies secrets in a worker thread (argon2 takes tens of ms)."""

    def __init__(self, params: HashParams = HashParams()):
        self._ph = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
        )
        # Verified against when the user does not exist, so that timing does not tell.
        self._dummy = decoy_hash(self._ph)

    async def hash(self, secret: str) -> str:
        """An encoded argon2id hash of ``secret``."""
        return await asyncio.to_thread(self._ph.hash, secret)

    async def verify(self, encoded: str | None, secret: str) -> bool:
        """Whether ``secret`` matches; ``encoded=None`` burns the same time and says no."""
        target = encoded or self._dummy

        def check() -> bool:
            try:
                return self._ph.verify(target, secret)
            except (VerificationError, InvalidHashError):
                return False

        ok = await asyncio.to_thread(check)
        return ok and encoded is not None


def decoy_hash(ph: PasswordHasher) -> str:
    """An encoded argon2id hash with ``ph``'s cost, salt and hash lengths, its salt and
    digest random bytes: verifying against it costs what verifying a real hash does (the
    cost is the encoded parameters), and no secret matches it. Made without hashing,
    which at these parameters costs seconds on an emulated CPU at every IAM start."""

    def b64(n: int) -> str:  # argon2's encoding: standard base64 without padding
        return base64.b64encode(secrets.token_bytes(n)).decode().rstrip("=")

    return (
        f"$argon2id$v={ARGON2_VERSION}$m={ph.memory_cost},t={ph.time_cost},p={ph.parallelism}"
        f"${b64(ph.salt_len)}${b64(ph.hash_len)}"
    )


_DIGEST_PREFIX = "sha256$"


def digest_secret(secret: str) -> str:
    """The stored form of a generated client secret."""
    return _DIGEST_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def new_client_secret() -> tuple[str, str]:
    """A fresh client secret (shown once) and its stored digest."""
    secret = secrets.token_urlsafe(32)
    return secret, digest_secret(secret)


def check_secret(stored: str | None, secret: str) -> bool:
    """Constant-time comparison of ``secret`` with a stored digest (``None``: no)."""
    candidate = digest_secret(secret)
    return hmac.compare_digest(stored or _DIGEST_PREFIX, candidate) and stored is not None
