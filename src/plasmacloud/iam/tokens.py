"""Access tokens (signed JWTs), refresh tokens and revocation.

Access tokens are ES256 JWTs with ``iss, sub, aud, exp, iat, nbf, jti`` plus
``preferred_username``, ``groups``, ``roles``, ``scope`` and ``client_id``; anything
that reads the JWKS can verify them. Refresh tokens are opaque random strings stored
hashed; they rotate (each works once) and a replayed one revokes its whole family.
Revoking an access token records its ``jti`` until the token would have expired anyway;
verifiers poll that list.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import jwt

from plasmacloud.iam.jwtcheck import TokenError, decode_token, token_kid
from plasmacloud.iam.keys import ALGORITHM, KeyRing
from plasmacloud.iam.store import KVStore

REFRESH_PREFIX = "/plasmacloud/iam/refresh/"
REVOKED_PREFIX = "/plasmacloud/iam/revoked/"
FAMILY_PREFIX = "/plasmacloud/iam/refresh-revoked/"


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """Issuer identity and lifetimes (seconds)."""

    issuer: str
    audience: str = "plasmacloud"
    access_ttl: float = 900.0
    refresh_ttl: float = 8 * 3600.0
    leeway: float = 30.0


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a token is for: ``sub`` is ``user:<name>`` or ``sa:<client_id>``."""

    sub: str
    username: str
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """What the token endpoint returns (RFC 6749 section 5.1 field names)."""

    access_token: str
    expires_in: int
    scope: str
    jti: str
    refresh_token: str | None = None
    token_type: str = "Bearer"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
            "scope": self.scope,
        }
        if self.refresh_token:
            out["refresh_token"] = self.refresh_token
        return out


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """What a refresh token stands for (looked up when it is redeemed).

    ``family`` is shared by every refresh token descending from one login; ``used``
    marks a redeemed token, kept until it expires so that presenting it again is seen.
    """

    sub: str
    scope: str
    expires_at: float
    family: str
    client_id: str | None = None
    used: bool = False


def _digest(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


class TokenService:
    """Issues, verifies, refreshes and revokes tokens; all state is in the store."""

    def __init__(
        self,
        store: KVStore,
        keyring: KeyRing,
        settings: TokenSettings,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._issued_refresh = 0

    async def issue(
        self,
        subject: Subject,
        scope: str = "",
        with_refresh: bool = True,
        family: str | None = None,
    ) -> IssuedTokens:
        """A signed access token (and optionally a refresh token) for ``subject``.

        ``family``: the login a refreshed token descends from (``None``: a new login).
        """
        now = self._clock()
        key = await self._keyring.signing_key()
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": subject.sub,
            "aud": self.settings.audience,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + self.settings.access_ttl),
            "jti": jti,
            "preferred_username": subject.username,
            "groups": list(subject.groups),
            "roles": list(subject.roles),
            "scope": scope,
        }
        if subject.client_id:
            claims["client_id"] = subject.client_id
        token = jwt.encode(claims, key.private_key(), algorithm=ALGORITHM, headers={"kid": key.kid})
        refresh = None
        if with_refresh:
            refresh = secrets.token_urlsafe(32)
            grant = RefreshGrant(
                sub=subject.sub,
                scope=scope,
                expires_at=now + self.settings.refresh_ttl,
                family=family or secrets.token_urlsafe(12),
                client_id=subject.client_id,
            )
            await self._store.put(
                REFRESH_PREFIX + _digest(refresh), json.dumps(asdict(grant)).encode()
            )
            self._issued_refresh += 1
            if self._issued_refresh % 100 == 0:
                await self._prune_refresh_state()
        return IssuedTokens(token, int(self.settings.access_ttl), scope, jti, refresh)

    async def _prune_refresh_state(self) -> None:
        # Expired records are dead weight; sweep a bounded batch now and then.
        now = self._clock()
        for prefix, field_name in ((REFRESH_PREFIX, "expires_at"), (FAMILY_PREFIX, "exp")):
            for kv in await self._store.range(prefix, limit=500):
                if float(json.loads(kv.value)[field_name]) < now:
                    await self._store.delete(kv.key)

    async def _revoke_family(self, family: str) -> None:
        # Every member expires within refresh_ttl from now, so the mark can go then.
        exp = self._clock() + self.settings.refresh_ttl
        await self._store.put(FAMILY_PREFIX + family, json.dumps({"exp": exp}).encode())

    async def redeem_refresh(self, refresh_token: str) -> RefreshGrant:
        """Consume a refresh token; raises :class:`TokenError` when it is not valid.

        Refresh tokens rotate: each works once. Presenting a used one again means it was
        copied, so the whole family (every token from that login) is revoked, as the
        OAuth 2.0 Security BCP recommends; the same happens to the loser of two
        concurrent redemptions.
        """
        key = REFRESH_PREFIX + _digest(refresh_token)
        kv = await self._store.get(key)
        if kv is None:
            raise TokenError("invalid_grant", "unknown refresh token")
        grant = RefreshGrant(**json.loads(kv.value))
        if grant.expires_at < self._clock():
            raise TokenError("invalid_grant", "refresh token expired")
        if await self._store.get(FAMILY_PREFIX + grant.family) is not None:
            raise TokenError("invalid_grant", "refresh token revoked")
        used = json.dumps({**asdict(grant), "used": True}).encode()
        if grant.used or not await self._store.compare_and_swap(key, kv.version, used):
            await self._revoke_family(grant.family)
            raise TokenError("invalid_grant", "refresh token reused; its session is revoked")
        return grant

    async def verify(self, token: str) -> dict[str, Any]:
        """Verify an access token against the cluster's keys and the revocation list."""
        kid = token_kid(token)
        keys = await self._keyring.verification_keys()
        if kid not in keys:
            keys = await self._keyring.verification_keys(refresh=True)
        if kid not in keys:
            raise TokenError("unknown_kid", f"no signing key {kid!r}")
        claims = decode_token(
            token,
            keys[kid],
            self.settings.issuer,
            self.settings.audience,
            self.settings.leeway,
            now=self._clock(),
        )
        if await self._store.get(REVOKED_PREFIX + str(claims["jti"])) is not None:
            raise TokenError("revoked", "the token has been revoked")
        return claims

    async def revoke(self, token: str) -> bool:
        """Revoke an access or refresh token (RFC 7009); ``True`` if it was one of ours."""
        if token.count(".") == 2:
            try:
                claims = await self.verify(token)
            except TokenError as exc:
                return exc.reason == "revoked"
            exp = float(claims["exp"])
            await self._store.put(
                REVOKED_PREFIX + str(claims["jti"]), json.dumps({"exp": exp}).encode()
            )
            return True
        kv = await self._store.get(REFRESH_PREFIX + _digest(token))
        if kv is None:
            return False
        await self._revoke_family(RefreshGrant(**json.loads(kv.value)).family)
        return True

    async def revocations(self) -> list[dict[str, Any]]:
        """Revoked ``jti``s whose tokens have not expired yet (expired entries are pruned)."""
        now = self._clock()
        out = []
        for kv in await self._store.range(REVOKED_PREFIX):
            exp = float(json.loads(kv.value)["exp"])
            if exp + self.settings.leeway < now:
                await self._store.delete(kv.key)
                continue
            out.append({"jti": kv.key[len(REVOKED_PREFIX) :], "exp": exp})
        return out
