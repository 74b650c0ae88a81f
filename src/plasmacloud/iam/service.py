"""IAM's behaviour, independent of HTTP: logins, grants, caller authorization, bootstrap."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from plasmacloud.common.config import NodeConfig
from plasmacloud.iam.audit import AuditLog
from plasmacloud.iam.conditions import ContextValue
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.iam.directory import (
    ROOT,
    Directory,
    Entity,
    Group,
    Kind,
    PolicyRecord,
    ServiceAccount,
    User,
)
from plasmacloud.iam.endpoints import issuer_for
from plasmacloud.iam.jwtcheck import TokenError
from plasmacloud.iam.keys import KeyRing
from plasmacloud.iam.lockout import AccountLockout, IpFailureLimiter, LockoutPolicy
from plasmacloud.iam.metrics import IamMetrics
from plasmacloud.iam.passwords import Hasher, HashParams, check_secret, new_client_secret
from plasmacloud.iam.policy import Decision, evaluate
from plasmacloud.iam.principal import AuditRecord, Principal, request_context
from plasmacloud.iam.sealing import Sealer, read_sealing_key
from plasmacloud.iam.store import KVStore
from plasmacloud.iam.tokens import IssuedTokens, Subject, TokenService, TokenSettings

BOOTSTRAP_KEY = ROOT + "meta/bootstrap"
ADMIN_POLICY = "AdministratorAccess"
ADMIN_GROUP = "admins"
BOOTSTRAP_STALE = 60.0  # seconds after which an unfinished bootstrap is taken over


class GrantError(Exception):
    """An OAuth2 error (RFC 6749 section 5.2): ``error`` code and HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400, retry_after: float = 0):
        self.error = error
        self.status = status
        self.retry_after = retry_after
        super().__init__(description)


@dataclass(frozen=True, slots=True)
class IamSettings:
    """How one IAM node behaves (see :func:`settings_from_config`)."""

    node_id: str
    tokens: TokenSettings
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    hashing: HashParams = field(default_factory=HashParams)
    key_cache_seconds: float = 5.0
    key_max_age: float = 30 * 86400.0  # signing keys rotate on first use after this
    # the cluster's sealing key (iam.sealing); None: signing keys are stored in clear
    sealing_key: bytes | None = field(default=None, repr=False)


def _subject_of(entity: object) -> Subject:
    """The token subject for a user or service account (refused when gone or disabled)."""
    if not isinstance(entity, User | ServiceAccount) or entity.disabled:
        raise GrantError("invalid_grant", "the account does not exist or is disabled")
    is_sa = isinstance(entity, ServiceAccount)
    return Subject(
        sub=f"{'sa' if is_sa else 'user'}:{entity.name}",
        username=entity.name,
        groups=tuple(entity.groups),
        roles=tuple(entity.roles),
        client_id=entity.name if is_sa else None,
    )


def _in_admin_group(entity: Entity) -> Entity:
    """``entity`` (a user) with the admins group among its groups."""
    if not isinstance(entity, User) or ADMIN_GROUP in entity.groups:
        return entity
    return entity.model_copy(update={"groups": [*entity.groups, ADMIN_GROUP]})


class IamService:
    """Everything an IAM node does, with its state in ``store``."""

    def __init__(
        self, store: KVStore, settings: IamSettings, clock: Callable[[], float] = time.time
    ):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.directory = Directory(store)
        self.keyring = KeyRing(
            store,
            token_ttl=settings.tokens.access_ttl,
            leeway=settings.tokens.leeway,
            cache_seconds=settings.key_cache_seconds,
            max_age=settings.key_max_age,
            clock=clock,
            sealer=Sealer(settings.sealing_key) if settings.sealing_key else None,
        )
        self.tokens = TokenService(store, self.keyring, settings.tokens, clock=clock)
        self.hasher = Hasher(settings.hashing)
        self.lockout = AccountLockout(store, settings.lockout, clock=clock)
        limits = settings.lockout
        self.ip_limiter = IpFailureLimiter(limits.ip_burst, limits.ip_per_second)
        self.audit = AuditLog(store, settings.node_id, clock=clock)
        self.metrics = IamMetrics()

    # -- grants ----------------------------------------------------------------------

    async def subject(self, sub: str) -> Subject:
        """Who ``user:<name>`` / ``sa:<client_id>`` is now (GrantError if gone or disabled)."""
        kind, _, name = sub.partition(":")
        entity = await self.directory.get(
            Kind.USER if kind == "user" else Kind.SERVICE_ACCOUNT, name
        )
        return _subject_of(entity)

    async def certificate_subject(self, name: str) -> Subject | None:
        """The principal a client certificate with CN ``name`` speaks for: the user of that
        name, else the service account of that name; ``None`` if neither exists or the
        one found is disabled (a disabled user does not fall back to a service account)."""
        for kind in (Kind.USER, Kind.SERVICE_ACCOUNT):
            entity = await self.directory.get(kind, name)
            if entity is not None:
                try:
                    return _subject_of(entity)
                except GrantError:
                    return None
        return None

    def _refuse_if_throttled(self, ip: str) -> None:
        if self.ip_limiter.blocked(ip):
            self.metrics.login_failures.labels("rate_limited").inc()
            raise GrantError("slow_down", "too many attempts from this address", 429, 5.0)

    def _failed(self, ip: str) -> None:
        self.ip_limiter.failed(ip)
        self.metrics.login_failures.labels("bad_credentials").inc()

    async def _check_password(self, username: str, password: str, ip: str) -> Subject:
        """A user's password, behind the IP limit and the shared account lockout."""
        self._refuse_if_throttled(ip)
        account = f"{Kind.USER.value}/{username}"
        wait, counted = await self.lockout.status(account)
        if wait > 0:
            self.metrics.login_failures.labels("locked").inc()
            raise GrantError("invalid_grant", "account temporarily locked", 429, wait)
        entity = await self.directory.get(Kind.USER, username)
        stored = entity.password_hash if isinstance(entity, User) else None
        if not await self.hasher.verify(stored, password):
            self._failed(ip)
            if entity is not None:
                await self.lockout.record_failure(account)
            raise GrantError("invalid_grant", "invalid username or password")
        if counted:  # only then is there a counter to clear (saves a write per login)
            await self.lockout.record_success(account)
        return _subject_of(entity)

    async def _check_client(self, client_id: str, secret: str, ip: str) -> Subject:
        """A service account's secret, behind the IP limit only.

        No account lockout here: the secrets are 256 random bits (nothing to guess), and
        a lockout would let anyone who knows a client id lock the service out.
        """
        self._refuse_if_throttled(ip)
        entity = await self.directory.get(Kind.SERVICE_ACCOUNT, client_id)
        stored = entity.secret_hash if isinstance(entity, ServiceAccount) else None
        if not check_secret(stored, secret):
            self._failed(ip)
            raise GrantError("invalid_client", "invalid client credentials", 401)
        return _subject_of(entity)

    async def password_grant(
        self, username: str, password: str, scope: str, ip: str
    ) -> IssuedTokens:
        """OAuth2 resource-owner password grant."""
        subject = await self._check_password(username, password, ip)
        self.metrics.tokens_issued.labels("password").inc()
        return await self.tokens.issue(subject, scope)

    async def client_credentials_grant(
        self, client_id: str, secret: str, scope: str, ip: str
    ) -> IssuedTokens:
        """OAuth2 client-credentials grant for service accounts (no refresh token, per RFC)."""
        subject = await self._check_client(client_id, secret, ip)
        self.metrics.tokens_issued.labels("client_credentials").inc()
        return await self.tokens.issue(subject, scope, with_refresh=False)

    async def refresh_grant(self, refresh_token: str) -> IssuedTokens:
        """Exchange a refresh token for new tokens (group/role changes take effect here)."""
        try:
            grant = await self.tokens.redeem_refresh(refresh_token)
        except TokenError as exc:
            raise GrantError("invalid_grant", str(exc)) from None
        subject = await self.subject(grant.sub)
        self.metrics.tokens_issued.labels("refresh_token").inc()
        return await self.tokens.issue(subject, grant.scope, family=grant.family)

    async def change_own_password(self, sub: str, current: str, new: str, ip: str) -> None:
        """Self-service password change; the current password is checked like a login."""
        kind, _, name = sub.partition(":")
        if kind != "user":
            raise GrantError("invalid_request", "only users have passwords", 400)
        await self._check_password(name, current, ip)
        hashed = await self.hasher.hash(new)
        await self.directory.update(
            Kind.USER, name, lambda e: e.model_copy(update={"password_hash": hashed})
        )

    # -- callers ---------------------------------------------------------------------

    async def authenticate(self, token: str) -> Principal:
        """Verify a bearer token presented to this server."""
        with self.metrics.verify_seconds.time():
            claims = await self.tokens.verify(token)
        return Principal.from_claims(claims, token)

    async def authorize(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: dict[str, ContextValue] | None = None,
    ) -> Decision:
        """Decide a request against the principal's policies, count it and audit it."""
        ctx = request_context(principal, self.clock(), context)
        decision = evaluate(
            await self.directory.effective_policies(principal.sub), action, resource, ctx
        )
        self.metrics.decisions.labels(decision.effect).inc()
        await self.audit.record(
            AuditRecord(self.clock(), principal.sub, action, resource, decision)
        )
        return decision

    # -- bootstrap -------------------------------------------------------------------

    async def bootstrap(
        self,
        username: str = "admin",
        deliver: Callable[[AdminCredentials], None] | None = None,
    ) -> AdminCredentials | None:
        """Create the first admin (user + service account); ``None`` if done before.

        Idempotent across nodes and re-runs: the marker key is claimed by compare-and-swap
        first, so one caller at a time creates the admin. ``deliver`` (write the
        credentials file) runs *before* the marker says "done": a bootstrap that died
        half-way (claimed, never done) is taken over by the next run after
        ``BOOTSTRAP_STALE`` seconds instead of leaving a cluster nobody can administer.
        """
        now = self.clock()
        marker = await self.store.get(BOOTSTRAP_KEY)
        if marker is not None:
            state = json.loads(marker.value)
            if state.get("done", True) or now - float(state["at"]) < BOOTSTRAP_STALE:
                return None
        claim = {"at": now, "by": self.settings.node_id, "done": False}
        expected = marker.version if marker else 0
        if not await self.store.compare_and_swap(
            BOOTSTRAP_KEY, expected, json.dumps(claim).encode()
        ):
            return None
        client_secret, client_digest = new_client_secret()
        creds = AdminCredentials(
            username=username,
            password=secrets.token_urlsafe(24),
            client_id=f"{username}-client",
            client_secret=client_secret,
        )
        admin_doc = {
            "Version": "2012-10-17",
            "Statement": [{"Sid": "Everything", "Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        d = self.directory
        if await d.get(Kind.POLICY, ADMIN_POLICY) is None:
            await d.create(
                Kind.POLICY,
                PolicyRecord(name=ADMIN_POLICY, description="full access", document=admin_doc),
            )
        if await d.get(Kind.GROUP, ADMIN_GROUP) is None:
            await d.create(Kind.GROUP, Group(name=ADMIN_GROUP, policies=[ADMIN_POLICY]))
        await d.save(
            Kind.USER,
            User(
                name=username,
                description="bootstrap administrator",
                groups=[ADMIN_GROUP],
                password_hash=await self.hasher.hash(creds.password),
            ),
        )
        await d.save(
            Kind.SERVICE_ACCOUNT,
            ServiceAccount(
                name=creds.client_id,
                description="bootstrap administrator (client credentials)",
                groups=[ADMIN_GROUP],
                secret_hash=client_digest,
            ),
        )
        if deliver is not None:
            deliver(creds)
        await self.store.put(BOOTSTRAP_KEY, json.dumps({**claim, "done": True}).encode())
        return creds

    async def ensure_certificate_admin(self, name: str) -> bool:
        """Make the holder of a client certificate with CN ``name`` an administrator by
        policy: the user ``name`` (no password: it logs in by certificate only) in the
        admins group, created or added to the group if need be. Run after
        :meth:`bootstrap`; True if anything changed."""
        d = self.directory
        user = await d.get(Kind.USER, name)
        if user is None:
            desc = f"administrator by client certificate (CN {name})"
            await d.create(Kind.USER, User(name=name, description=desc, groups=[ADMIN_GROUP]))
            return True
        if isinstance(user, User) and ADMIN_GROUP not in user.groups:
            await d.update(Kind.USER, name, _in_admin_group)
            return True
        return False

    async def is_bootstrapped(self) -> bool:
        return await self.store.get(BOOTSTRAP_KEY) is not None


def settings_from_config(config: NodeConfig) -> IamSettings:
    """IAM settings of this node, derived from its ``cluster-config.json``."""
    sealing = config.sealing_key_file
    return IamSettings(
        node_id=config.node_id,
        tokens=TokenSettings(issuer=issuer_for(config)),
        sealing_key=read_sealing_key(sealing) if sealing else None,
    )
