"""ES256 signing keys shared by every IAM node through the store, with rotation.

Exactly one key signs at a time (the store's ``keys-active`` pointer, updated by
compare-and-swap so two nodes rotating at once agree on one winner). A retired key stays
in the JWKS until every token it signed has expired (``retired_at + token_ttl + leeway``)
and is then pruned. Private keys live in Chainfire next to the rest of IAM's state,
sealed with the cluster's sealing key when the node has one (``iam.sealing``), so no
database file, snapshot or backup holds them in clear; Chainfire's mTLS protects them in
transit. Keys an older release stored in clear are sealed the first time a node with
the sealing key reads them.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plasmacloud.iam.jwtcheck import PublicKey
from plasmacloud.iam.sealing import Sealer, SealingError
from plasmacloud.iam.store import KVStore

KEYS_PREFIX = "/plasmacloud/iam/keys/"
ACTIVE_KEY = "/plasmacloud/iam/keys-active"
ALGORITHM = "ES256"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key pair; ``retired_at`` is set once a newer key took over signing."""

    kid: str
    private_pem: str
    created_at: float
    retired_at: float | None = None

    @classmethod
    def generate(cls, now: float) -> SigningKey:
        """A fresh P-256 key with a random kid."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cls(kid=secrets.token_urlsafe(12), private_pem=pem, created_at=now)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return _load_private(self.private_pem)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK (``kid``, ``alg``, ``use`` set)."""
        jwk: dict[str, Any] = json.loads(
            jwt.algorithms.ECAlgorithm.to_jwk(self.private_key().public_key())
        )
        jwk.update(kid=self.kid, alg=ALGORITHM, use="sig")
        return jwk

    def public_key(self) -> PublicKey:
        return PublicKey(self.kid, ALGORITHM, self.private_key().public_key())

    def to_bytes(self, sealer: Sealer | None) -> bytes:
        """The stored form: the private key sealed when there is a ``sealer``."""
        record: dict[str, Any] = asdict(self)
        if sealer is not None:
            pem = record.pop("private_pem").encode()
            record["sealed"] = sealer.seal(pem, aad=self.kid.encode())
            record["sealed_with"] = sealer.key_id
        return json.dumps(record).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, sealer: Sealer | None) -> SigningKey:
        record = json.loads(raw)
        if "sealed" in record:
            if sealer is None:
                raise SealingError(
                    "IAM's signing keys are sealed and this node has no sealing key: set "
                    "sealing_key_file in its cluster-config.json"
                )
            pem = sealer.open(
                record.pop("sealed"), record.pop("sealed_with"), aad=record["kid"].encode()
            )
            record["private_pem"] = pem.decode()
        return cls(**record)

    @staticmethod
    def is_sealed(raw: bytes) -> bool:
        return "sealed" in json.loads(raw)


@lru_cache(maxsize=64)
def _load_private(pem: str) -> ec.EllipticCurvePrivateKey:
    # Parsing PEM costs ~0.1 ms; keys are read on every token issue and verification.
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


class KeyRing:
    """The cluster's signing keys, read through from the store with a short cache."""

    def __init__(
        self,
        store: KVStore,
        token_ttl: float,
        leeway: float = 30.0,
        cache_seconds: float = 5.0,
        max_age: float = 30 * 86400.0,
        clock: Callable[[], float] = time.time,
        sealer: Sealer | None = None,
    ):
        self._store = store
        self._sealer = sealer
        self._max_age = max_age
        self._keep_after_retire = token_ttl + leeway
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: tuple[float, str | None, dict[str, SigningKey]] | None = None
        self._forced_at = float("-inf")

    async def _load(self, force: bool = False) -> tuple[str | None, dict[str, SigningKey]]:
        now = self._clock()
        if not force and self._cache and now - self._cache[0] < self._cache_seconds:
            return self._cache[1], self._cache[2]
        active = await self._store.get(ACTIVE_KEY)
        keys = {}
        for kv in await self._store.range(KEYS_PREFIX):
            key = SigningKey.from_bytes(kv.value, self._sealer)
            keys[key.kid] = key
            if self._sealer is not None and not SigningKey.is_sealed(kv.value):
                # stored in clear by an older release: seal it (unless it changed meanwhile)
                await self._store.compare_and_swap(kv.key, kv.version, key.to_bytes(self._sealer))
        active_kid = active.value.decode() if active else None
        self._cache = (now, active_kid, keys)
        return active_kid, keys

    async def signing_key(self) -> SigningKey:
        """The key that signs now; the first caller in the cluster creates it.

        A key older than ``max_age`` is rotated on its next use (compare-and-swap makes
        the nodes agree on one successor), so keys rotate without an operator.
        """
        active, keys = await self._load()
        current = keys.get(active) if active else None
        if current is None:
            active, keys = await self._load(force=True)
            current = keys.get(active) if active else None
        if current is None:
            return await self._install_new(expected_active=active)
        if self._clock() - current.created_at > self._max_age:
            return await self._install_new(expected_active=current.kid)
        return current

    async def _install_new(self, expected_active: str | None) -> SigningKey:
        pointer = await self._store.get(ACTIVE_KEY)
        if (pointer.value.decode() if pointer else None) != expected_active:
            return await self._winner()
        fresh = SigningKey.generate(self._clock())
        await self._store.put(KEYS_PREFIX + fresh.kid, fresh.to_bytes(self._sealer))
        won = await self._store.compare_and_swap(
            ACTIVE_KEY, pointer.version if pointer else 0, fresh.kid.encode()
        )
        if not won:  # another node installed its key first; use that one
            await self._store.delete(KEYS_PREFIX + fresh.kid)
            return await self._winner()
        if expected_active is not None:
            old = await self._store.get(KEYS_PREFIX + expected_active)
            if old is not None:
                previous = SigningKey.from_bytes(old.value, self._sealer)
                retired = replace(previous, retired_at=self._clock())
                await self._store.put(KEYS_PREFIX + retired.kid, retired.to_bytes(self._sealer))
        self._cache = None
        return fresh

    async def _winner(self) -> SigningKey:
        active, keys = await self._load(force=True)
        winner = keys.get(active) if active else None
        if winner is None:
            raise RuntimeError("signing key pointer names a missing key; retry")
        return winner

    async def rotate(self) -> SigningKey:
        """Start signing with a new key; the old one stays verifiable until its tokens expire."""
        active, _ = await self._load(force=True)
        return await self._install_new(expected_active=active)

    async def verification_keys(self, refresh: bool = False) -> dict[str, PublicKey]:
        """Every key whose tokens may still be alive.

        ``refresh`` (a token named an unknown kid) re-reads the store, at most once a
        second, so tokens with made-up kids cannot turn into a flood of store reads.
        """
        now = self._clock()
        if refresh and now - self._forced_at < 1.0:
            refresh = False
        if refresh:
            self._forced_at = now
        _, keys = await self._load(force=refresh)
        now = self._clock()
        out = {}
        for k in keys.values():
            if k.retired_at is not None and k.retired_at + self._keep_after_retire < now:
                await self._store.delete(KEYS_PREFIX + k.kid)  # nothing it signed is alive
                continue
            out[k.kid] = k.public_key()
        return out

    async def jwks(self) -> dict[str, Any]:
        """The JWKS document (public keys only); creates the first key if there is none."""
        await self.signing_key()
        _, keys = await self._load()
        live = await self.verification_keys()
        return {"keys": [keys[kid].public_jwk() for kid in sorted(live)]}
