"""Who a verified caller is (by token or client certificate), and the record of one
authorization decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from plasmacloud.iam.conditions import ContextValue
from plasmacloud.iam.policy import Decision


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller.

    ``auth`` says how: a bearer ``token``; a client ``certificate`` whose CN names this
    IAM principal (no token, so ``jti`` is empty and ``expires_at`` infinite); or a cluster
    ``node``'s certificate, the node's system principal (see ``iam.certidentity``).
    """

    sub: str
    username: str
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    jti: str
    expires_at: float
    client_id: str | None = None
    token: str = field(default="", repr=False)
    auth: Literal["token", "certificate", "node"] = "token"

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], token: str) -> Principal:
        return cls(
            sub=str(claims["sub"]),
            username=str(claims.get("preferred_username") or claims["sub"]),
            groups=tuple(claims.get("groups") or ()),
            roles=tuple(claims.get("roles") or ()),
            jti=str(claims["jti"]),
            expires_at=float(claims["exp"]),
            client_id=claims.get("client_id"),
            token=token,
        )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One authorization decision (who, what, on what, the answer, and why)."""

    at: float
    sub: str
    action: str
    resource: str
    decision: Decision


def request_context(
    principal: Principal, now: float, extra: Mapping[str, ContextValue] | None = None
) -> dict[str, ContextValue]:
    """The condition keys every decision gets, plus the caller's (``plasma:SourceIp``...).

    ``plasma:username``, ``plasma:userid`` (``user:alice``), ``plasma:groups`` and
    ``plasma:roles`` (lists: a condition matches if any member does) and
    ``plasma:CurrentTime``.
    """
    return {
        "plasma:username": principal.username,
        "plasma:userid": principal.sub,
        "plasma:groups": list(principal.groups),
        "plasma:roles": list(principal.roles),
        "plasma:CurrentTime": datetime.fromtimestamp(now, UTC),
        **(extra or {}),
    }
