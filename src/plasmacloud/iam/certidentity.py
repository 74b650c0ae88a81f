"""Who a verified client certificate speaks for on a call that carries no token.

etcd with ``--client-cert-auth`` takes the certificate's CN for a user name and applies
that user's roles. Chainfire and FlareDB do the same through IAM:

* A CN that is a node id of the cluster is that node's system principal ``node:<id>``,
  decided locally by :data:`NODE_POLICY` (no IAM call: IAM itself reaches its store with
  its node's certificate, so asking IAM here could never finish).
* Any other CN names an IAM user, or failing that a service account, of that name; that
  principal's effective policies decide, exactly as for a token of it. IAM answers the
  lookup (``GET /v1/certificate-identities/<cn>``) to node certificates only; the answer
  is cached like a token's policies (see :class:`HttpIdentitySource`).
* A CN naming nobody, or a disabled principal, is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from plasmacloud.iam.cache import TtlCache
from plasmacloud.iam.directory import NAME_RE
from plasmacloud.iam.policy import Policy, parse_policy, parse_policy_list
from plasmacloud.iam.principal import Principal
from plasmacloud.iam.upstream import IamRefused, IamUpstream

# What members must do to each other on the client ports, and nothing else: a follower
# hands a membership change it received (and authorized) to the leader, and a FlareDB
# follower forwards a weak read it authorized to the leader. Both are calls a member
# makes with its own certificate; neither lets a node read or write a user's key.
NODE_POLICY_DOCUMENT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "ForwardMembershipChanges",
            "Effect": "Allow",
            "Action": ["chainfire:MemberAdd", "chainfire:MemberRemove"],
            "Resource": "cluster",
        },
        {
            "Sid": "ForwardWeakReads",
            "Effect": "Allow",
            "Action": "flaredb:Query",
            "Resource": "db/*",
        },
    ],
}
NODE_POLICY_NAME = "plasmacloud:node"
NODE_POLICY: list[tuple[str, Policy]] = [(NODE_POLICY_NAME, parse_policy(NODE_POLICY_DOCUMENT))]


def node_principal(node_id: str) -> Principal:
    """The system principal of a cluster node (its certificate's CN is its node id)."""
    return Principal(f"node:{node_id}", node_id, (), (), "", float("inf"), auth="node")


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """The principal a certificate CN names, and its effective policies."""

    principal: Principal
    policies: list[tuple[str, Policy]]


class IdentitySource(Protocol):
    """Resolves a certificate CN to the enabled principal of that name (None: nobody)."""

    async def resolve(self, common_name: str) -> CertificateIdentity | None: ...


class HttpIdentitySource:
    """Asks IAM (as this node) who a CN names; answers cached, so a call costs no round trip.

    A principal and its policies are kept ``ttl`` seconds (the token path's policy TTL:
    policy edits, disabling and deleting apply within it); "nobody of that name" only
    ``negative_ttl`` seconds, so a principal created for a certificate works at once
    while unknown names still cost IAM at most one lookup each per ``negative_ttl``.
    While IAM is unreachable a known answer is kept for ``max_stale`` seconds.
    """

    def __init__(
        self,
        upstream: IamUpstream,
        ttl: float,
        negative_ttl: float,
        max_stale: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._upstream = upstream
        self._cache: TtlCache[str, CertificateIdentity | None] = TtlCache(
            lambda found: ttl if found is not None else negative_ttl, clock, max_stale
        )

    async def resolve(self, common_name: str) -> CertificateIdentity | None:
        if not NAME_RE.match(common_name):
            return None  # no principal can have this name: nothing to ask
        return await self._cache.get(common_name, lambda: self._fetch(common_name))

    async def _fetch(self, name: str) -> CertificateIdentity | None:
        status, body = await self._upstream.request(
            "GET", f"/v1/certificate-identities/{quote(name, safe='')}"
        )
        if status == 404:
            return None
        if status != 200:
            raise IamRefused(status, str(body))
        principal = Principal(
            sub=str(body["sub"]),
            username=str(body["username"]),
            groups=tuple(body.get("groups") or ()),
            roles=tuple(body.get("roles") or ()),
            jti="",
            expires_at=float("inf"),
            client_id=body.get("client_id"),
            auth="certificate",
        )
        return CertificateIdentity(principal, parse_policy_list(body))
