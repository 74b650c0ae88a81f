"""Optional IAM enforcement on FlareDB's HTTP API.

When a node is started with IAM URLs, every ``/db/*`` request must carry
``Authorization: Bearer <access token>`` (verified locally from IAM's JWKS) or, as rqlite
clients send it, ``Basic user:password`` (exchanged at IAM for a token, cached). Reads
need ``flaredb:Query`` and writes/loads ``flaredb:Execute`` on ``db/main``; health,
status and metrics stay open so probes work without credentials. A request without
``Authorization`` whose verified client certificate has a trusted CN (the cluster's node
ids, forwarding for each other, and names given with ``--trusted-cn``) is let through, as
Chainfire does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from aiohttp import web

from plasmacloud.iam.authz import Principal, Verifier, flaredb_action, flaredb_resource
from plasmacloud.iam.jwtcheck import TokenError

QUERY = "Query"
EXECUTE = "Execute"


def _deny(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="flaredb"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


class Guard:
    """Authenticates a request and decides one FlareDB action on one database."""

    def __init__(
        self, verifier: Verifier, database: str = "main", trusted_cns: Iterable[str] = ()
    ) -> None:
        self.verifier = verifier
        self.resource = flaredb_resource(database)
        self.trusted_cns = frozenset(trusted_cns)

    async def _principal(self, header: str, client_ip: str | None) -> Principal:
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

    def _trusted_peer(self, request: web.Request) -> bool:
        """True if the TLS client certificate (verified by the handshake) has a trusted CN."""
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        for rdn in (cert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName" and value in self.trusted_cns:
                    return True
        return False

    async def check(self, request: web.Request, kind: str) -> web.Response | None:
        """``None`` if the caller may do ``kind`` (Query/Execute), else the 401/403 answer."""
        if "Authorization" not in request.headers and self._trusted_peer(request):
            return None
        try:
            principal = await self._principal(
                request.headers.get("Authorization", ""), request.remote
            )
        except TokenError as exc:
            return _deny(401, f"authentication required: {exc}")
        decision = await self.verifier.authorize(
            principal,
            flaredb_action(kind),
            self.resource,
            {"plasma:SourceIp": request.remote or "", "plasma:SecureTransport": request.secure},
        )
        if not decision.allowed:
            return _deny(
                403,
                f"{principal.username or principal.sub} may not {flaredb_action(kind)} on "
                f"{self.resource} ({decision.reason})",
            )
        return None
