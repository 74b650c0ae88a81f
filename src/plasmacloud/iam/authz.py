"""IAM's side of the services' auth hook: verify tokens locally, decide requests.

:class:`Verifier` implements ``plasmacloud.common.authhook.AuthHook``, and
:class:`ServiceVerifier` the hook a serving Chainfire or FlareDB node runs with; the
services know only the interface, and the command that composes a server
(:func:`service_auth`) passes IAM's in. A :class:`Verifier` talks to IAM only to refresh
caches, never once per request:

* **JWKS** (``/.well-known/jwks.json``) is fetched once and again only when a token names
  an unknown ``kid`` (a rotation happened), at most once per ``jwks_min_refresh``
  seconds so random kids cannot make it hammer IAM.
* **Revocations** (``/v1/revocations``) are re-read when the cached list is older than
  ``revocation_refresh`` seconds (default 5). *A revoked token therefore stops working on
  every node within ``revocation_refresh`` seconds plus one fetch.* If IAM cannot be
  reached the last list is kept for up to ``revocation_max_stale`` seconds, after which
  tokens are refused (fail closed) until a fetch succeeds.
* **Policies** of a principal (``/v1/self/policies``, fetched with the principal's own
  token) are cached for ``policy_ttl`` seconds, so policy edits apply within that time.
* **Certificate identities**: a call without a token is made by the principal its
  verified client certificate's CN names (``iam.certidentity``): a node id is that
  node's system principal, decided locally; any other CN is looked up at IAM
  (``/v1/certificate-identities/<cn>``) and the principal with its policies cached for
  ``policy_ttl`` seconds (unknown names for ``negative_ttl``), so it costs no round trip
  per call either.

Naming: actions are ``chainfire:<RPC>`` (Range, Put, DeleteRange, Txn, Compact, Watch,
LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases, MemberList,
MemberAdd, MemberRemove, Status, Snapshot, ...) on ``key/<key>`` (cluster-level RPCs use
``cluster``), and ``flaredb:Query`` / ``flaredb:Execute`` on ``db/<name>``. Condition
keys every decision gets: ``plasma:username``, ``plasma:userid``, ``plasma:CurrentTime``,
plus whatever the caller passes (``plasma:SourceIp``, ``plasma:SecureTransport``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry

from plasmacloud.common.authhook import NodeAuthFactory, token_from_metadata
from plasmacloud.common.authnames import (
    CHAINFIRE_ACTIONS,
    CLUSTER_RESOURCE,
    FLAREDB_ACTIONS,
    chainfire_action,
    chainfire_range,
    chainfire_resource,
    flaredb_action,
    flaredb_resource,
)
from plasmacloud.common.config import ClusterNodeIds, NodeConfig
from plasmacloud.common.tls import client_context
from plasmacloud.iam.cache import TtlCache
from plasmacloud.iam.certidentity import (
    NODE_POLICY,
    HttpIdentitySource,
    IdentitySource,
    node_principal,
)
from plasmacloud.iam.conditions import ContextValue
from plasmacloud.iam.endpoints import iam_urls
from plasmacloud.iam.jwtcheck import PublicKey, TokenError, decode_token, keys_from_jwks, token_kid
from plasmacloud.iam.policy import Decision, Policy, evaluate, parse_policy_list
from plasmacloud.iam.principal import AuditRecord, Principal, request_context
from plasmacloud.iam.shipper import AuditShipper
from plasmacloud.iam.upstream import IamRefused, IamUnavailable, IamUpstream

log = logging.getLogger(__name__)

# One import path for IAM's enforcement: what tests and the composing commands use.
__all__ = [
    "CHAINFIRE_ACTIONS",
    "CLUSTER_RESOURCE",
    "FLAREDB_ACTIONS",
    "AuditRecord",
    "AuditShipper",
    "Decision",
    "HttpPolicySource",
    "IamRefused",
    "IamUnavailable",
    "PolicySource",
    "Principal",
    "ServiceVerifier",
    "TokenError",
    "Verdict",
    "Verifier",
    "chainfire_action",
    "chainfire_range",
    "chainfire_resource",
    "flaredb_action",
    "flaredb_resource",
    "service_auth",
    "token_from_metadata",
]


class PolicySource(Protocol):
    """Where a principal's effective policies come from."""

    async def policies_for(self, principal: Principal) -> list[tuple[str, Policy]]: ...


class HttpPolicySource:
    """Fetches a principal's policies from IAM with its own token; caches per subject."""

    def __init__(
        self, upstream: IamUpstream, ttl: float, clock: Callable[[], float] = time.monotonic
    ):
        self._upstream = upstream
        self._cache: TtlCache[str, list[tuple[str, Policy]]] = TtlCache(lambda _: ttl, clock)

    async def policies_for(self, principal: Principal) -> list[tuple[str, Policy]]:
        return await self._cache.get(principal.sub, lambda: self._fetch(principal))

    async def _fetch(self, principal: Principal) -> list[tuple[str, Policy]]:
        body = await self._upstream.get_json("/v1/self/policies", token=principal.token)
        return parse_policy_list(body)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one call: a service maps it onto its own error replies.

    ``status`` is ``"ok"``, ``"unauthenticated"`` (no or bad credentials: gRPC
    UNAUTHENTICATED / HTTP 401), ``"denied"`` (gRPC PERMISSION_DENIED / HTTP 403; also a
    certificate naming no enabled principal, as etcd answers an unknown CN) or
    ``"unavailable"`` (a certificate's principal could not be looked up: IAM unreachable).
    """

    status: Literal["ok", "unauthenticated", "denied", "unavailable"]
    message: str = ""
    principal: Principal | None = None


class Verifier:
    """Verifies bearer tokens and authorizes requests with cached IAM state (see module doc)."""

    def __init__(
        self,
        iam_urls: Sequence[str],
        *,
        audience: str = "plasmacloud",
        issuer: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        jwks_min_refresh: float = 5.0,
        revocation_refresh: float = 5.0,
        revocation_max_stale: float = 300.0,
        policy_ttl: float = 10.0,
        leeway: float = 30.0,
        http_timeout: float = 3.0,
        policy_source: PolicySource | None = None,
        audit: Callable[[AuditRecord], Awaitable[None] | None] | None = None,
        clock: Callable[[], float] = time.time,
        node_ids: Container[str] = (),
        identity_source: IdentitySource | None = None,
        negative_ttl: float = 1.0,
    ):
        """``node_ids``: the cluster's nodes, whose certificates are system principals
        (see :meth:`authenticate_certificate`)."""
        self._upstream = IamUpstream(iam_urls, ssl_context, http_timeout)
        self._audience = audience
        self._issuer = issuer
        self._jwks_min_refresh = jwks_min_refresh
        self._revocation_refresh = revocation_refresh
        self._revocation_max_stale = revocation_max_stale
        self._leeway = leeway
        self._clock = clock
        self._policies = policy_source or HttpPolicySource(self._upstream, policy_ttl, clock)
        self._node_ids = node_ids
        self._identities = identity_source or HttpIdentitySource(
            self._upstream, policy_ttl, negative_ttl, revocation_max_stale, clock
        )
        self._audit = audit
        self._keys: dict[str, PublicKey] = {}
        self._jwks_fetched_at = float("-inf")
        self._revoked: set[str] = set()
        self._revoked_fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._logins: dict[str, Principal] = {}
        # token -> its verified principal (built once per token, not once per call)
        self._verified: OrderedDict[str, Principal] = OrderedDict()
        self._verified_max = 10_000

    @classmethod
    def for_config(cls, config: NodeConfig, **options: Any) -> Verifier:
        """A Verifier for a service on this node: every IAM of the cluster, this node's
        first, over the node's TLS (its certificate presented, the cluster CA trusted),
        the cluster's node ids as system principals."""
        return cls(
            iam_urls(config),
            ssl_context=client_context(config.tls),
            node_ids=ClusterNodeIds(config),
            **options,
        )

    async def _refresh_jwks(self) -> None:
        async with self._lock:
            if self._clock() - self._jwks_fetched_at < self._jwks_min_refresh:
                return
            self._jwks_fetched_at = self._clock()  # also on failure: bounds retries
            if self._issuer is None:
                disco = await self._upstream.get_json("/.well-known/openid-configuration")
                self._issuer = str(disco["issuer"])
            self._keys = keys_from_jwks(await self._upstream.get_json("/.well-known/jwks.json"))

    async def _refresh_revocations(self) -> None:
        async with self._lock:
            now = self._clock()
            if now - self._revoked_fetched_at < self._revocation_refresh:
                return
            try:
                body = await self._upstream.get_json("/v1/revocations")
            except IamUnavailable as exc:
                log.warning("revocation list not refreshed: %s", exc)
                return
            self._revoked = {str(r["jti"]) for r in body.get("revoked", [])}
            self._revoked_fetched_at = now

    async def authenticate(self, token: str) -> Principal:
        """Verify a bearer token; raises :class:`TokenError` with a short ``reason``."""
        principal = self._verified.get(token)
        if principal is None:
            principal = await self._verify_signature(token)
        elif self._clock() > principal.expires_at + self._leeway:
            del self._verified[token]
            raise TokenError("expired", "the token has expired")
        if self._clock() - self._revoked_fetched_at >= self._revocation_refresh:
            await self._refresh_revocations()
        if self._clock() - self._revoked_fetched_at > self._revocation_max_stale:
            raise TokenError("iam_unavailable", "revocation list too old; IAM unreachable")
        if principal.jti in self._revoked:
            raise TokenError("revoked", "the token has been revoked")
        return principal

    async def _verify_signature(self, token: str) -> Principal:
        # A signature is checked once per token (ES256 verification costs ~0.2-0.7 ms
        # here); the verdict is cached while the token lives. Expiry and revocation are
        # still checked on every call by authenticate().
        kid = token_kid(token)
        if kid not in self._keys:
            try:
                await self._refresh_jwks()
            except IamUnavailable as exc:
                raise TokenError("iam_unavailable", str(exc)) from None
        key = self._keys.get(kid)
        if key is None:
            raise TokenError("unknown_kid", f"no signing key {kid!r} in IAM's JWKS")
        claims = decode_token(
            token, key, self._issuer, self._audience, self._leeway, now=self._clock()
        )
        principal = Principal.from_claims(claims, token)
        if len(self._verified) >= self._verified_max:
            self._verified.popitem(last=False)  # oldest first: bounded memory
        self._verified[token] = principal
        return principal

    async def authenticate_header(
        self, authorization: str, client_ip: str | None = None
    ) -> Principal:
        """An HTTP ``Authorization`` value: ``Bearer <token>`` or ``Basic <user:pass>``
        (``client_ip``: see :meth:`password_login`)."""
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return await self.authenticate(value.strip())
        if scheme.lower() == "basic":
            try:
                user, sep, password = (
                    base64.b64decode(value.strip(), validate=True).decode().partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                raise TokenError("malformed", "unreadable Basic credentials") from None
            if sep and user:
                return await self.password_login(user, password, client_ip)
        raise TokenError("no_credentials", "expected 'Bearer <token>' or 'Basic <user:pass>'")

    async def authenticate_certificate(self, common_name: str) -> Principal:
        """The principal a verified client certificate's CN names (a call without token).

        A node id of the cluster is that node's system principal (no IAM call); any other
        CN must name an enabled IAM user or service account, looked up once per
        ``policy_ttl``. Raises :class:`TokenError` with reason ``unknown_identity`` or
        ``iam_unavailable``.
        """
        if common_name in self._node_ids:
            return node_principal(common_name)
        try:
            identity = await self._identities.resolve(common_name)
        except (IamUnavailable, IamRefused) as exc:
            raise TokenError("iam_unavailable", f"certificate identity lookup: {exc}") from None
        if identity is None:
            raise TokenError(
                "unknown_identity",
                f"certificate CN {common_name!r} names no enabled IAM user or service account",
            )
        return identity.principal

    async def check(
        self,
        principal: Principal,
        action: str,
        resources: Sequence[tuple[str, bool]],
        context: Mapping[str, ContextValue] | None = None,
    ) -> Verdict:
        """Authorize ``action`` on every ``(resource, is_prefix)``; all must be allowed."""
        for resource, prefix in resources:
            decision = await self.authorize(principal, action, resource, context, prefix)
            if not decision.allowed:
                target = resource + "*" * prefix
                why = f" ({decision.policy}/{decision.statement})" if decision.policy else ""
                return Verdict(
                    "denied", f"{principal.username} may not {action} on {target}{why}", principal
                )
        return Verdict("ok", "", principal)

    async def check_etcd_call(
        self,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        rpc: str,
        ranges: Sequence[tuple[bytes, bytes]],
        source_ip: str | None = None,
        common_name: str | None = None,
    ) -> Verdict:
        """One Chainfire call: the token from the metadata or, without one, the verified
        client certificate's ``common_name`` (as etcd's ``--client-cert-auth``) says who
        calls; ``chainfire:<rpc>`` on each range decides.

        A Txn is checked as ``chainfire:Txn`` on every range it touches; RPCs that touch
        no key (members, status, snapshot...) are checked on ``cluster``.
        """
        token = token_from_metadata(metadata)
        if token is not None:
            try:
                principal = await self.authenticate(token)
            except TokenError as exc:
                return Verdict("unauthenticated", f"token refused ({exc.reason})")
        elif common_name is not None:
            try:
                principal = await self.authenticate_certificate(common_name)
            except TokenError as exc:
                if exc.reason == "iam_unavailable":
                    return Verdict("unavailable", str(exc))
                return Verdict("denied", str(exc))
        else:
            return Verdict("unauthenticated", "a token or a client certificate is required")
        resources = [chainfire_range(k, e) for k, e in ranges] or [(CLUSTER_RESOURCE, False)]
        ctx: dict[str, ContextValue] = {"plasma:SourceIp": source_ip} if source_ip else {}
        return await self.check(principal, chainfire_action(rpc), resources, ctx)

    async def check_http_call(
        self,
        authorization: str | None,
        action: str,
        resource: str,
        source_ip: str | None = None,
        secure: bool | None = None,
    ) -> Verdict:
        """One FlareDB call: ``Authorization`` (Bearer or Basic), then the policy check."""
        if not authorization:
            return Verdict("unauthenticated", "credentials required (Bearer token or Basic)")
        try:
            principal = await self.authenticate_header(authorization, source_ip)
        except TokenError as exc:
            return Verdict("unauthenticated", f"credentials refused ({exc.reason})")
        ctx: dict[str, ContextValue] = {}
        if source_ip:
            ctx["plasma:SourceIp"] = source_ip
        if secure is not None:
            ctx["plasma:SecureTransport"] = secure
        return await self.check(principal, action, [(resource, False)], ctx)

    async def password_login(
        self, username: str, password: str, client_ip: str | None = None
    ) -> Principal:
        """Log in with a user name and password (rqlite's ``-u``, etcd's Authenticate).

        The password grant goes to IAM (where lockout and rate limits apply), forwarding
        the client's address (``X-Forwarded-For: client_ip``) so IAM limits failures per
        client rather than per service; IAM believes it only from a node's certificate,
        the one this Verifier presents when built with :meth:`for_config`. The token is
        cached under a hash of the credentials until shortly before it expires, so a
        client sending Basic auth on every request does not cost an IAM call each time.
        """
        cache_key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        hit = self._logins.get(cache_key)
        if hit is not None and hit.expires_at - self._leeway > self._clock():
            try:
                return await self.authenticate(hit.token)
            except TokenError:
                # revoked meanwhile: the right password must still get a fresh token
                del self._logins[cache_key]
        try:
            status, body = await self._upstream.request(
                "POST",
                "/oauth2/token",
                form={"grant_type": "password", "username": username, "password": password},
                headers={"X-Forwarded-For": client_ip} if client_ip else None,
            )
        except IamUnavailable as exc:
            raise TokenError("iam_unavailable", str(exc)) from None
        if status == 429:
            raise TokenError("rate_limited", str(body.get("error_description", "")))
        if status != 200:
            raise TokenError("invalid_credentials", "invalid user name or password")
        principal = await self.authenticate(str(body["access_token"]))
        if len(self._logins) > 10_000:  # bound memory
            self._logins.clear()
        self._logins[cache_key] = principal
        return principal

    async def authorize(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, ContextValue] | None = None,
        prefix: bool = False,
    ) -> Decision:
        """Decide ``action`` on ``resource`` for ``principal`` (default deny).

        ``prefix=True`` for a range of keys (see :func:`chainfire_range`).
        """
        try:
            policies = await self._policies_of(principal)
        except (IamUnavailable, IamRefused) as exc:
            log.warning("policies for %s unavailable, denying: %s", principal.sub, exc)
            policies = []
        # the context (a clock read, the caller's groups...) only where a statement reads it
        needed = any(policy.needs_context for _, policy in policies)
        ctx = request_context(principal, self._clock(), context) if needed else {}
        decision = evaluate(policies, action, resource, ctx, prefix)
        # A node's allowed calls are the cluster's own traffic (IAM's store writes among
        # them: auditing those would write more of them); its refusals are recorded.
        if self._audit is not None and (principal.auth != "node" or not decision.allowed):
            pending = self._audit(
                AuditRecord(self._clock(), principal.sub, action, resource + "*" * prefix, decision)
            )
            if pending is not None:
                await pending
        return decision

    async def _policies_of(self, principal: Principal) -> list[tuple[str, Policy]]:
        if principal.auth == "node":
            return NODE_POLICY
        if principal.auth == "certificate":
            identity = await self._identities.resolve(principal.username)
            # gone or replaced by another principal of that name since: nothing applies
            if identity is None or identity.principal.sub != principal.sub:
                return []
            return identity.policies
        return await self._policies.policies_for(principal)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._upstream.close()


class ServiceVerifier(Verifier):
    """The hook a serving Chainfire or FlareDB node runs with (``common.authhook.NodeAuth``):
    over the node's TLS (its certificate presented, the cluster CA trusted), the cluster's
    node ids as system principals, decisions shipped to IAM's audit log as
    ``<service>@<node id>`` with the shipper's metrics in the service's ``registry``."""

    def __init__(
        self,
        iam_urls: Sequence[str],
        service: str,
        config: NodeConfig,
        registry: CollectorRegistry,
    ) -> None:
        ssl_context = client_context(config.tls)
        self.shipper = AuditShipper(
            iam_urls, f"{service}@{config.node_id}", ssl_context=ssl_context, registry=registry
        )
        super().__init__(
            iam_urls,
            ssl_context=ssl_context,
            audit=self.shipper,
            node_ids=ClusterNodeIds(config),
        )

    def start(self) -> None:
        """Start shipping decisions (beside the service)."""
        self.shipper.start()

    async def close(self) -> None:
        """Flush the audit shipper, then close the HTTP session."""
        await self.shipper.close()
        await super().close()


def service_auth(service: str, urls: Sequence[str]) -> NodeAuthFactory | None:
    """How ``plasma <service> serve --iam-url ...`` turns auth on: a factory of the node's
    :class:`ServiceVerifier` asking these IAM nodes, or None (auth off) without URLs."""
    return partial(ServiceVerifier, tuple(urls), service) if urls else None
