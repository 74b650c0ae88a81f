"""The auth hook: how a service asks an authority who is calling and whether they may.

Chainfire and FlareDB know only these interfaces, never IAM itself, so the services stay
independent of each other. IAM implements them (``iam.authz.Verifier``, and
``iam.authz.ServiceVerifier`` for a serving node), and the place that composes a server
(``plasma chainfire serve`` / ``plasma flaredb serve``) passes IAM's factory in. With no
hook a service allows every call, as an etcd or rqlite with auth disabled.

The methods are those the services' guards call: a bearer token, a user name and
password, or a verified client certificate's CN becomes a caller; a caller is
authorized for an action on a resource; an etcd call is checked in one step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry

from plasmacloud.common.config import NodeConfig


class TokenError(Exception):
    """Credentials were refused; ``reason`` is a short machine-readable word
    (``expired``, ``invalid_credentials``, ``iam_unavailable``, ...)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Caller(Protocol):
    """A verified caller, as the services see it."""

    @property
    def sub(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def token(self) -> str:
        """The access token it called with ("" for a certificate's caller)."""


class Allowance(Protocol):
    """The answer to one authorization question."""

    @property
    def allowed(self) -> bool: ...
    @property
    def reason(self) -> str: ...


class CallVerdict(Protocol):
    """The outcome of checking one whole call.

    ``status`` is ``"ok"``, ``"unauthenticated"`` (no or bad credentials), ``"denied"``
    (a policy refusal, or a certificate naming no enabled principal) or
    ``"unavailable"`` (the authority could not be asked); a service maps it onto its own
    error replies.
    """

    @property
    def status(self) -> str: ...
    @property
    def message(self) -> str: ...


P = TypeVar("P", bound=Caller)


class AuthHook(Protocol[P]):
    """What a service's guard asks; every method raises :class:`TokenError` to refuse
    credentials. ``P`` is the authority's caller type, handed back to :meth:`authorize`."""

    async def authenticate(self, token: str) -> P:
        """The caller a bearer token stands for."""
        ...

    async def password_login(self, username: str, password: str, client_ip: str | None = None) -> P:
        """Log in by name and password (``client_ip``: the caller's address, not the
        service's, so failures are counted per client)."""
        ...

    async def authenticate_certificate(self, common_name: str) -> P:
        """The caller a verified client certificate's CN names."""
        ...

    async def authorize(
        self,
        principal: P,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> Allowance:
        """May ``principal`` do ``action`` on ``resource``? (``context``: condition keys
        such as ``plasma:SourceIp``)."""
        ...

    async def check_etcd_call(
        self,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        rpc: str,
        ranges: Sequence[tuple[bytes, bytes]],
        source_ip: str | None = None,
        common_name: str | None = None,
    ) -> CallVerdict:
        """One etcd RPC: credentials from the gRPC ``metadata`` or, without a token, the
        certificate's ``common_name``; ``rpc`` on every ``(key, range_end)`` it touches."""
        ...


class NodeAuth(AuthHook[Any], Protocol):
    """The hook a serving node runs with: started beside the service, closed after it."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


# Builds a node's hook from its config, its metrics registered in the service's registry.
NodeAuthFactory = Callable[[NodeConfig, CollectorRegistry], NodeAuth]


def token_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The bearer token of a gRPC call: etcd clients send ``token``, others ``authorization``."""
    for key, value in metadata or ():
        text = value.decode() if isinstance(value, bytes) else value
        if key.lower() == "token" and text:
            return text
        if key.lower() == "authorization" and text.lower().startswith("bearer "):
            return text[7:].strip() or None
    return None
