"""Local JWT verification shared by the IAM server and the enforcement library.

Only asymmetric algorithms on an allow-list are accepted, the algorithm must be the one
the JWKS entry declares (no RS/HS or ES/RS confusion), ``alg: none`` is refused before
any key is looked at, and ``exp``/``nbf``/``iss``/``aud`` are always checked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from plasmacloud.common.authhook import TokenError

ALLOWED_ALGORITHMS = ("ES256", "RS256")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One verification key from a JWKS."""

    kid: str
    algorithm: str
    key: Any  # a cryptography public key object


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, PublicKey]:
    """Parse a JWKS document into ``kid -> key``; entries with other algorithms are skipped."""
    out: dict[str, PublicKey] = {}
    for entry in jwks.get("keys", []):
        if not isinstance(entry, dict) or entry.get("alg") not in ALLOWED_ALGORITHMS:
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        out[kid] = PublicKey(kid, entry["alg"], jwk.key)
    return out


def token_kid(token: str) -> str:
    """The ``kid`` of a token's header, after refusing disallowed algorithms."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("malformed", str(exc)) from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise TokenError("bad_algorithm", f"alg {alg!r} is not one of {ALLOWED_ALGORITHMS}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("no_kid", "the token header has no kid")
    return kid


def decode_token(
    token: str,
    key: PublicKey,
    issuer: str | None,
    audience: str | None,
    leeway: float = 30.0,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify signature and standard claims with ``key``; returns the claims.

    Time claims are checked here against ``now`` (default: the wall clock) rather than
    by PyJWT, so that callers with an injected clock (tests, simulations) agree.
    """
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != key.algorithm:
            raise TokenError("bad_algorithm", "token alg does not match the key's alg")
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm],
            audience=audience,
            issuer=issuer,
            options={
                "require": ["exp", "iat", "iss", "sub", "jti"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": audience is not None,
                "verify_iss": issuer is not None,
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenError("bad_signature", "signature verification failed") from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
        raise TokenError("wrong_audience_or_issuer", str(exc)) from None
    except jwt.PyJWTError as exc:
        raise TokenError("invalid", str(exc)) from None
    _check_times(claims, time.time() if now is None else now, leeway)
    return claims


def _check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    try:
        exp = float(claims["exp"])
        not_before = float(claims.get("nbf", claims["iat"]))
    except (TypeError, ValueError):
        raise TokenError("invalid", "exp/nbf/iat must be numbers") from None
    if now > exp + leeway:
        raise TokenError("expired", "the token has expired")
    if now + leeway < not_before:
        raise TokenError("not_yet_valid", "the token is not valid yet (nbf/iat)")
