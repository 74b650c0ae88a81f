"""The enforcement library Chainfire and FlareDB use: verify tokens locally, decide requests.

It imports nothing from ``chainfire`` or ``flaredb`` (they import it). A
:class:`Verifier` talks to IAM only to refresh caches, never once per request:

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
import contextlib
import hashlib
import logging
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import aiohttp

from plasmacloud.iam.conditions import ContextValue
from plasmacloud.iam.jwtcheck import PublicKey, TokenError, decode_token, keys_from_jwks, token_kid
from plasmacloud.iam.keyrange import common_prefix, prefix_end
from plasmacloud.iam.policy import Decision, Policy, PolicyError, evaluate, parse_policy

log = logging.getLogger(__name__)

CHAINFIRE_ACTIONS = (
    "Range",
    "Put",
    "DeleteRange",
    "Txn",
    "Compact",
    "Watch",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseKeepAlive",
    "LeaseTimeToLive",
    "LeaseLeases",
    "MemberList",
    "MemberAdd",
    "MemberRemove",
    "Status",
    "Hash",
    "Snapshot",
)
FLAREDB_ACTIONS = ("Query", "Execute")
CLUSTER_RESOURCE = "cluster"


def chainfire_action(rpc: str) -> str:
    """``Put`` -> ``chainfire:Put``."""
    return f"chainfire:{rpc}"


def chainfire_resource(key: bytes | str) -> str:
    """``b"app/x"`` -> ``key/app/x`` (non-UTF-8 bytes are escaped, never dropped)."""
    text = key.decode("utf-8", errors="backslashreplace") if isinstance(key, bytes) else key
    return f"key/{text}"


def chainfire_range(key: bytes, range_end: bytes = b"") -> tuple[str, bool]:
    """The resource an etcd request on ``[key, range_end)`` needs, and whether it is a prefix.

    A single key is ``key/<key>``. A prefix range (``etcdctl get --prefix app/``) is the
    prefix ``key/app/``: authorize it with ``prefix=True`` so an Allow must cover every
    key in it and a Deny on any key in it refuses it. Other intervals are widened to their
    common prefix (``range_end=b"\\0"``, "from key on", to everything), which can only
    make a decision stricter, never looser.
    """
    if not range_end:
        return chainfire_resource(key), False
    if range_end == prefix_end(key):
        return chainfire_resource(key), True
    if range_end == b"\x00":
        return chainfire_resource(b""), True
    return chainfire_resource(common_prefix(key, range_end)), True


def flaredb_action(kind: str) -> str:
    """``Query`` or ``Execute`` -> ``flaredb:Query`` / ``flaredb:Execute``."""
    return f"flaredb:{kind}"


def flaredb_resource(db: str = "main") -> str:
    """``main`` -> ``db/main``."""
    return f"db/{db}"


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller."""

    sub: str
    username: str
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    jti: str
    expires_at: float
    client_id: str | None = None
    token: str = field(default="", repr=False)

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


class PolicySource(Protocol):
    """Where a principal's effective policies come from."""

    async def policies_for(self, principal: Principal) -> list[tuple[str, Policy]]: ...


def parse_policy_list(body: Mapping[str, Any]) -> list[tuple[str, Policy]]:
    """``{"policies": [{"name", "document"}]}`` -> parsed pairs (bad entries are skipped)."""
    out = []
    for item in body.get("policies", []):
        try:
            out.append((str(item["name"]), parse_policy(item["document"])))
        except (KeyError, TypeError, PolicyError) as exc:
            log.warning("ignoring an unreadable policy from IAM: %s", exc)
    return out


class _Upstream:
    """GETs JSON from the first IAM URL that answers, remembering which one did."""

    def __init__(self, urls: Sequence[str], ssl_context: ssl.SSLContext | None, timeout: float):
        if not urls:
            raise ValueError("at least one IAM URL is required")
        self._urls = [u.rstrip("/") for u in urls]
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._preferred = 0

    async def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        form: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> tuple[int, Any]:
        """``(status, JSON body)`` from the first IAM URL that answers below 500."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        errors = []
        n = len(self._urls)
        for i in range(n):
            idx = (self._preferred + i) % n
            url = self._urls[idx] + path
            try:
                async with self._session.request(
                    method, url, headers=headers, data=form, json=body, ssl=self._ssl or True
                ) as resp:
                    if resp.status >= 500:
                        errors.append(f"{url}: HTTP {resp.status}")
                        continue
                    self._preferred = idx
                    if resp.content_type != "application/json":
                        return resp.status, {"error": await resp.text()}
                    return resp.status, await resp.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{url}: {exc!r}")
        raise IamUnavailable("; ".join(errors))

    async def get_json(self, path: str, token: str | None = None) -> Any:
        """GET that must answer 200 (:class:`IamRefused` otherwise)."""
        status, body = await self.request("GET", path, token=token)
        if status != 200:
            raise IamRefused(status, str(body))
        return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class IamUnavailable(Exception):
    """No IAM URL answered."""


class IamRefused(Exception):
    """IAM answered with a 4xx (e.g. the token presented for policy lookup was refused)."""

    def __init__(self, status: int, body: str):
        self.status = status
        super().__init__(f"IAM answered HTTP {status}: {body[:200]}")


class HttpPolicySource:
    """Fetches a principal's policies from IAM with its own token; caches per subject."""

    def __init__(
        self, upstream: _Upstream, ttl: float, clock: Callable[[], float] = time.monotonic
    ):
        self._upstream = upstream
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, list[tuple[str, Policy]]]] = {}

    async def policies_for(self, principal: Principal) -> list[tuple[str, Policy]]:
        now = self._clock()
        hit = self._cache.get(principal.sub)
        if hit and now - hit[0] < self._ttl:
            return hit[1]
        try:
            body = await self._upstream.get_json("/v1/self/policies", token=principal.token)
        except IamUnavailable:
            if hit:  # keep deciding with what we know while IAM is away
                return hit[1]
            raise
        policies = parse_policy_list(body)
        if len(self._cache) > 10_000:  # bound memory under many distinct callers
            self._cache.clear()
        self._cache[principal.sub] = (now, policies)
        return policies


def token_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The bearer token of a gRPC call: etcd clients send ``token``, others ``authorization``."""
    for key, value in metadata or ():
        text = value.decode() if isinstance(value, bytes) else value
        if key.lower() == "token" and text:
            return text
        if key.lower() == "authorization" and text.lower().startswith("bearer "):
            return text[7:].strip() or None
    return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one call: a service maps it onto its own error replies.

    ``status`` is ``"ok"``, ``"unauthenticated"`` (no or bad credentials: gRPC
    UNAUTHENTICATED / HTTP 401) or ``"denied"`` (gRPC PERMISSION_DENIED / HTTP 403).
    """

    status: Literal["ok", "unauthenticated", "denied"]
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
    ):
        self._upstream = _Upstream(iam_urls, ssl_context, http_timeout)
        self._audience = audience
        self._issuer = issuer
        self._jwks_min_refresh = jwks_min_refresh
        self._revocation_refresh = revocation_refresh
        self._revocation_max_stale = revocation_max_stale
        self._leeway = leeway
        self._clock = clock
        self._policies = policy_source or HttpPolicySource(self._upstream, policy_ttl, clock)
        self._audit = audit
        self._keys: dict[str, PublicKey] = {}
        self._jwks_fetched_at = float("-inf")
        self._revoked: set[str] = set()
        self._revoked_fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._logins: dict[str, Principal] = {}
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._verified_max = 10_000

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
        claims = self._verified.get(token)
        if claims is None:
            claims = await self._verify_signature(token)
        elif self._clock() > float(claims["exp"]) + self._leeway:
            del self._verified[token]
            raise TokenError("expired", "the token has expired")
        if self._clock() - self._revoked_fetched_at >= self._revocation_refresh:
            await self._refresh_revocations()
        if self._clock() - self._revoked_fetched_at > self._revocation_max_stale:
            raise TokenError("iam_unavailable", "revocation list too old; IAM unreachable")
        if claims["jti"] in self._revoked:
            raise TokenError("revoked", "the token has been revoked")
        return Principal.from_claims(claims, token)

    async def _verify_signature(self, token: str) -> dict[str, Any]:
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
        if len(self._verified) >= self._verified_max:
            self._verified.popitem(last=False)  # oldest first: bounded memory
        self._verified[token] = claims
        return claims

    async def authenticate_header(self, authorization: str) -> Principal:
        """An HTTP ``Authorization`` value: ``Bearer <token>`` or ``Basic <user:pass>``."""
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
                return await self.password_login(user, password)
        raise TokenError("no_credentials", "expected 'Bearer <token>' or 'Basic <user:pass>'")

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
    ) -> Verdict:
        """One Chainfire call: token from the metadata, ``chainfire:<rpc>`` on each range.

        A Txn is checked as ``chainfire:Txn`` on every range it touches; RPCs that touch
        no key (members, status, snapshot...) are checked on ``cluster``.
        """
        token = token_from_metadata(metadata)
        if token is None:
            return Verdict("unauthenticated", "a token is required (etcdctl --user)")
        try:
            principal = await self.authenticate(token)
        except TokenError as exc:
            return Verdict("unauthenticated", f"token refused ({exc.reason})")
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
            principal = await self.authenticate_header(authorization)
        except TokenError as exc:
            return Verdict("unauthenticated", f"credentials refused ({exc.reason})")
        ctx: dict[str, ContextValue] = {}
        if source_ip:
            ctx["plasma:SourceIp"] = source_ip
        if secure is not None:
            ctx["plasma:SecureTransport"] = secure
        return await self.check(principal, action, [(resource, False)], ctx)

    async def password_login(self, username: str, password: str) -> Principal:
        """Log in with a user name and password (rqlite's ``-u``, etcd's Authenticate).

        The password grant goes to IAM (where lockout and rate limits apply); the token is
        cached under a hash of the credentials until shortly before it expires, so a
        client sending Basic auth on every request does not cost an IAM call each time.
        """
        cache_key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        hit = self._logins.get(cache_key)
        if hit is not None and hit.expires_at - self._leeway > self._clock():
            return await self.authenticate(hit.token)
        try:
            status, body = await self._upstream.request(
                "POST",
                "/oauth2/token",
                form={"grant_type": "password", "username": username, "password": password},
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
        ctx: dict[str, ContextValue] = {
            "plasma:username": principal.username,
            "plasma:userid": principal.sub,
            "plasma:CurrentTime": datetime.fromtimestamp(self._clock(), UTC),
        }
        ctx.update(context or {})
        try:
            policies = await self._policies.policies_for(principal)
        except (IamUnavailable, IamRefused) as exc:
            log.warning("policies for %s unavailable, denying: %s", principal.sub, exc)
            policies = []
        decision = evaluate(policies, action, resource, ctx, prefix)
        if self._audit is not None:
            pending = self._audit(
                AuditRecord(self._clock(), principal.sub, action, resource + "*" * prefix, decision)
            )
            if pending is not None:
                await pending
        return decision

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._upstream.close()


class AuditShipper:
    """Sends a service's decisions to IAM's audit log (``POST /v1/audit``) in batches.

    Use an instance as the Verifier's ``audit`` callback and run :meth:`run` beside the
    service. The buffer is bounded: while IAM is unreachable the oldest records are
    dropped (and counted in ``dropped``) rather than growing memory without limit.
    """

    def __init__(
        self,
        iam_urls: Sequence[str],
        client_id: str,
        client_secret: str,
        source: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        http_timeout: float = 3.0,
    ):
        self._upstream = _Upstream(iam_urls, ssl_context, http_timeout)
        self._creds = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        self._source = source
        self._buffer: deque[AuditRecord] = deque(maxlen=max_buffer)
        self._batch = batch_size
        self._token: str | None = None
        self.dropped = 0
        self.sent = 0

    def __call__(self, record: AuditRecord) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(record)

    async def _login(self) -> str:
        status, body = await self._upstream.request("POST", "/oauth2/token", form=self._creds)
        if status != 200:
            raise IamRefused(status, str(body))
        self._token = str(body["access_token"])
        return self._token

    async def flush(self) -> int:
        """Send everything buffered now; returns how many records IAM accepted."""
        sent = 0
        while self._buffer:
            batch = [self._buffer[i] for i in range(min(self._batch, len(self._buffer)))]
            payload = {
                "source": self._source,
                "records": [
                    {"at": r.at, "sub": r.sub, "action": r.action, "resource": r.resource,
                     **r.decision.to_json()}
                    for r in batch
                ],
            }  # fmt: skip
            token = self._token or await self._login()
            status, body = await self._upstream.request("POST", "/v1/audit", token, body=payload)
            if status == 401:  # token expired: log in again once
                token = await self._login()
                status, body = await self._upstream.request(
                    "POST", "/v1/audit", token, body=payload
                )
            if status != 201:
                raise IamRefused(status, str(body))
            for _ in batch:
                self._buffer.popleft()
            sent += len(batch)
        self.sent += sent
        return sent

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds until ``stop`` is set (then once more)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            try:
                await self.flush()
            except (IamUnavailable, IamRefused) as exc:
                log.warning(
                    "audit records not shipped yet (%d buffered): %s", len(self._buffer), exc
                )
            if stop.is_set():
                return

    async def close(self) -> None:
        await self._upstream.close()
