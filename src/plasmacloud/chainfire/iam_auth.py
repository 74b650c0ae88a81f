"""Chainfire's auth when enabled: every call checked by IAM through the auth hook.

Chainfire knows IAM only as ``plasmacloud.common.authhook.AuthHook`` (IAM's
``Verifier`` in production, passed in where the server is composed).

A call is decided, in this order, like an etcd with auth on:

* ``Auth.Authenticate`` is open: it exchanges a user's name and password at IAM for an
  access token (etcdctl ``--user alice:pw``), which clients then send as ``token``
  metadata. A password that is itself an IAM access token (e.g. a service account's
  client-credentials token) logs in as that token, since etcdctl has no token flag.
* A call carrying a token is authorized as ``chainfire:<RPC>`` on the keys it touches
  (:meth:`AuthHook.check_etcd_call`): a bad, expired or revoked token answers
  ``etcdserver: invalid auth token``, a policy refusal ``etcdserver: permission denied``.
* A call without a token is made by its verified client certificate's CN, as etcd with
  ``--client-cert-auth`` takes the CN for the user name: the CN names an IAM user or
  service account whose policies decide exactly as for its token
  (:meth:`AuthHook.authenticate_certificate`; a node id is that node's narrow system
  principal). A CN naming no enabled principal gets ``etcdserver: permission denied``
  (etcd's answer for a CN that is no user), a call with neither token nor certificate
  ``etcdserver: user name is empty``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.auth import KeyRange
from plasmacloud.common.authhook import AuthHook, TokenError, token_from_metadata

log = logging.getLogger(__name__)

# RPCs a caller needs no credentials for: the one that hands out credentials.
OPEN_RPCS = frozenset({"Authenticate"})

IAM_UNAVAILABLE = errors.EtcdError(
    grpc.StatusCode.UNAVAILABLE, "etcdserver: authentication unavailable (IAM unreachable)"
)


def peer_common_name(context: grpc.aio.ServicerContext) -> str | None:
    """CN of the client certificate the TLS handshake verified (None without mTLS)."""
    names = context.auth_context().get("x509_common_name") or []
    for name in names:
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return None


def peer_ip(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's IP from gRPC's peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5``)."""
    kind, _, rest = (context.peer() or "").partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or None
    return None


def looks_like_jwt(text: str) -> bool:
    """A compact JWS: three dot-separated parts, the header a base64url JSON object."""
    return text.startswith("eyJ") and text.count(".") == 2


class IamAuthorizer:
    """The :class:`~plasmacloud.chainfire.auth.Authorizer` that asks IAM (see module doc)."""

    def __init__(self, verifier: AuthHook[Any]) -> None:
        self.verifier = verifier

    async def authorize(
        self, context: grpc.aio.ServicerContext, rpc: str, ranges: Sequence[KeyRange]
    ) -> None:
        """Return to allow the call; raise etcd's auth errors to refuse it."""
        if rpc in OPEN_RPCS:
            return
        metadata = context.invocation_metadata()
        common_name = peer_common_name(context)
        if token_from_metadata(metadata) is None and not common_name:
            raise errors.USER_EMPTY
        verdict = await self.verifier.check_etcd_call(
            metadata, rpc, ranges, peer_ip(context), common_name
        )
        if verdict.status == "unauthenticated":
            raise errors.INVALID_AUTH_TOKEN
        if verdict.status == "denied":
            log.info("refused: %s", verdict.message)
            raise errors.PERMISSION_DENIED
        if verdict.status == "unavailable":
            log.warning("refused: %s", verdict.message)
            raise IAM_UNAVAILABLE

    async def authenticate(self, name: str, password: str, client_ip: str | None = None) -> str:
        """etcd's Authenticate: an access token for a user name and password (IAM counts
        failures against ``client_ip``, the caller's address, not this node's)."""
        if looks_like_jwt(password):
            try:
                return (await self.verifier.authenticate(password)).token
            except TokenError:
                pass  # not one of our tokens after all: try it as a password
        try:
            return (await self.verifier.password_login(name, password, client_ip)).token
        except TokenError as exc:
            if exc.reason == "iam_unavailable":
                raise IAM_UNAVAILABLE from None
            raise errors.AUTH_FAILED from None
