"""Optional IAM enforcement on FlareDB's HTTP API.

FlareDB knows IAM only as ``plasmacloud.common.authhook.AuthHook`` (IAM's ``Verifier``
in production, passed in where the server is composed).

When a node is started with IAM URLs, every ``/db/*`` request is made by a principal and
decided by its policies: reads need ``flaredb:Query`` and writes/loads
``flaredb:Execute`` on ``db/main``; health, status and metrics stay open so probes work
without credentials. The principal is, in this order:

* ``Authorization: Bearer <access token>`` (verified locally from IAM's JWKS) or, as
  rqlite clients send it, ``Basic user:password`` (exchanged at IAM for a token, cached);
  bad credentials answer 401;
* without ``Authorization``, the verified client certificate's CN, as Chainfire (and
  etcd's ``--client-cert-auth``) takes it: the IAM user or service account of that name
  (a node id is that node's system principal, which may only forward reads to the
  leader). A CN naming no enabled principal answers 403, no certificate at all 401, IAM
  unreachable for the lookup 503.
"""

from __future__ import annotations

import base64
import binascii
from typing import Generic

from aiohttp import web

from plasmacloud.common.authhook import AuthHook, P, TokenError
from plasmacloud.common.authnames import flaredb_action, flaredb_resource
from plasmacloud.common.tls import request_common_name

QUERY = "Query"
EXECUTE = "Execute"
REMOVE = "RemoveNode"  # DELETE /remove, on the resource "cluster" as Chainfire's MemberRemove
JOIN = "JoinNode"  # POST /join, on "cluster" as Chainfire's MemberAdd
CLUSTER = "cluster"


def _deny(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="flaredb"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


class Guard(Generic[P]):
    """Authenticates a request and decides one FlareDB action on one database."""

    def __init__(self, verifier: AuthHook[P], database: str = "main") -> None:
        self.verifier = verifier
        self.resource = flaredb_resource(database)

    async def _principal(self, header: str, client_ip: str | None) -> P:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            return await self.verifier.authenticate(value.strip())
        if scheme.lower() == "basic" and value:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, sep, password = "", "", ""
            if not sep:
                raise TokenError("malformed", "Basic credentials must be base64(user:password)")
            return await self.verifier.password_login(user, password, client_ip)
        raise TokenError("missing", "send Authorization: Bearer <token> (or Basic user:password)")

    async def _caller(self, request: web.Request) -> P | web.Response:
        """Who makes the request (see module doc), or the refusal to answer with."""
        header = request.headers.get("Authorization")
        common_name = request_common_name(request) if header is None else None
        if common_name is None:
            try:
                return await self._principal(header or "", request.remote)
            except TokenError as exc:
                return _deny(401, f"authentication required: {exc}")
        try:
            return await self.verifier.authenticate_certificate(common_name)
        except TokenError as exc:
            return _deny(503 if exc.reason == "iam_unavailable" else 403, str(exc))

    async def check(
        self, request: web.Request, kind: str, resource: str | None = None
    ) -> web.Response | None:
        """``None`` if the caller may do ``kind`` (Query/Execute on the database, JoinNode
        and RemoveNode on the cluster) on ``resource`` (default: the database), else the
        401/403 answer."""
        resource = resource or self.resource
        principal = await self._caller(request)
        if isinstance(principal, web.Response):
            return principal
        decision = await self.verifier.authorize(
            principal,
            flaredb_action(kind),
            resource,
            {"plasma:SourceIp": request.remote or "", "plasma:SecureTransport": request.secure},
        )
        if not decision.allowed:
            return _deny(
                403,
                f"{principal.username or principal.sub} may not {flaredb_action(kind)} on "
                f"{resource} ({decision.reason})",
            )
        return None
