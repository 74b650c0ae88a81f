"""The IAM HTTP server (aiohttp): OAuth2/OIDC endpoints, admin REST API, audit, metrics.

``plasma iam serve --config cluster-config.json`` runs one node of it on
``ports.iam_http`` (TLS from the node's certificates when ``tls.enabled``). Nodes share
nothing but the store, so any node answers any request and a token from one verifies on
every other.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import ssl
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plasmacloud import __version__
from plasmacloud.common.config import ClusterNodeIds, NodeConfig
from plasmacloud.common.tls import request_common_name, server_context, watch_certificates
from plasmacloud.iam import api_models as m
from plasmacloud.iam.admin_api import admin_routes
from plasmacloud.iam.bootstrap import bootstrap_to_file
from plasmacloud.iam.directory import NAME_RE
from plasmacloud.iam.http_util import (
    SERVICE_KEY,
    ApiError,
    Route,
    caller,
    page_params,
    read_body,
    require,
    service,
)
from plasmacloud.iam.jwtcheck import ALLOWED_ALGORITHMS
from plasmacloud.iam.openapi import openapi_document
from plasmacloud.iam.policy import Decision, evaluate, parse_policy
from plasmacloud.iam.principal import AuditRecord, Principal, request_context
from plasmacloud.iam.service import GrantError, IamService, settings_from_config
from plasmacloud.iam.store import KVStore, StoreUnavailable
from plasmacloud.iam.stores import open_store

log = logging.getLogger(__name__)
OPENAPI_KEY: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
# the cluster's node ids: client certificates with one of these CNs may append audit records
NODE_IDS_KEY: web.AppKey[Container[str]] = web.AppKey("node_ids", Container)


# -- public: health, metrics, discovery ------------------------------------------------


async def health(request: web.Request) -> web.Response:
    svc = service(request)
    try:
        await svc.store.get("/plasmacloud/iam/meta/bootstrap")
    except StoreUnavailable as exc:
        return web.json_response(
            {"health": "false", "status": "unavailable", "store": repr(exc)}, status=503
        )
    # "health" as etcd spells it, so the lab's probe reads every service the same way
    return web.json_response({"health": "true", "status": "ok", "node": svc.settings.node_id})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(service(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def discovery(request: web.Request) -> web.Response:
    base = _base_url(request)
    return web.json_response(
        {
            "issuer": service(request).settings.tokens.issuer,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "token_endpoint": f"{base}/oauth2/token",
            "revocation_endpoint": f"{base}/oauth2/revoke",
            "grant_types_supported": ["password", "client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(ALLOWED_ALGORITHMS),
            "scopes_supported": ["openid"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "nbf", "jti",
                "preferred_username", "groups", "roles", "scope", "client_id",
            ],
        }
    )  # fmt: skip


async def jwks(request: web.Request) -> web.Response:
    body = await service(request).keyring.jwks()
    return web.json_response(body, headers={"Cache-Control": "public, max-age=60"})


async def revocations(request: web.Request) -> web.Response:
    return web.json_response({"revoked": await service(request).tokens.revocations()})


# -- OAuth2 ------------------------------------------------------------------------------


def _client_auth(request: web.Request, form: dict[str, str]) -> tuple[str, str] | None:
    """``client_secret_basic`` (Authorization: Basic) or ``client_secret_post`` (form)."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise GrantError("invalid_client", "malformed Basic credentials", 401) from None
        cid, sep, secret = raw.partition(":")
        if not sep:
            raise GrantError("invalid_client", "malformed Basic credentials", 401)
        return unquote(cid), unquote(secret)
    if "client_id" in form and "client_secret" in form:
        return form["client_id"], form["client_secret"]
    return None


def _field(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise GrantError("invalid_request", f"{name}: required")
    if len(value) > 4096:
        raise GrantError("invalid_request", f"{name}: too long")
    return value


def client_address(request: web.Request) -> str:
    """The address a login attempt is counted against (brute-force limits).

    Normally the peer's. Chainfire and FlareDB log their users in on their behalf, so
    from a cluster node's certificate the single address they forward in
    ``X-Forwarded-For`` is used instead; from anyone else the header is ignored (it
    would let a guesser pick a fresh address per attempt).
    """
    forwarded = request.headers.get("X-Forwarded-For", "").strip()
    if forwarded and request_common_name(request) in request.app[NODE_IDS_KEY]:
        try:
            return str(ipaddress.ip_address(forwarded))
        except ValueError:
            log.warning("ignoring a malformed X-Forwarded-For from a node: %.64r", forwarded)
    return request.remote or "unknown"


async def token(request: web.Request) -> web.Response:
    svc = service(request)
    ip = client_address(request)
    try:
        if request.content_type == "application/json":
            raw = await request.json()
            if not isinstance(raw, dict):
                raise GrantError("invalid_request", "the body must be an object")
            form = {str(k): str(v) for k, v in raw.items()}
        else:
            form = {k: str(v) for k, v in (await request.post()).items()}
        grant = form.get("grant_type", "")
        scope = form.get("scope", "")[:512]
        if grant == "password":
            issued = await svc.password_grant(
                _field(form, "username"), _field(form, "password"), scope, ip
            )
        elif grant == "client_credentials":
            creds = _client_auth(request, form)
            if creds is None:
                raise GrantError("invalid_client", "client_id and client_secret required", 401)
            issued = await svc.client_credentials_grant(creds[0], creds[1], scope, ip)
        elif grant == "refresh_token":
            issued = await svc.refresh_grant(_field(form, "refresh_token"))
        else:
            raise GrantError(
                "unsupported_grant_type",
                "grant_type must be password, client_credentials or refresh_token",
            )
    except GrantError as exc:
        headers = {"Cache-Control": "no-store"}
        if exc.retry_after:
            headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="plasmacloud-iam"'
        return web.json_response(
            {"error": exc.error, "error_description": str(exc)}, status=exc.status, headers=headers
        )
    except ValueError:
        return web.json_response(
            {"error": "invalid_request", "error_description": "unreadable body"}, status=400
        )
    return web.json_response(
        issued.to_json(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


async def revoke(request: web.Request) -> web.Response:
    """RFC 7009: whoever holds a token may revoke it; the answer is 200 either way."""
    form = await request.post()
    tok = str(form.get("token", ""))
    if not tok or len(tok) > 8192:
        return web.json_response(
            {"error": "invalid_request", "error_description": "token: required"}, status=400
        )
    await service(request).tokens.revoke(tok)
    return web.json_response({})


# -- the caller itself ---------------------------------------------------------------------


async def whoami(request: web.Request) -> web.Response:
    p = await caller(request)
    return web.json_response(
        {
            "sub": p.sub,
            "username": p.username,
            "groups": list(p.groups),
            "roles": list(p.roles),
            "client_id": p.client_id,
            "expires_at": p.expires_at,
        }
    )


async def own_policies(request: web.Request) -> web.Response:
    """The caller's effective policies (what ``iam.authz`` verifiers fetch and cache)."""
    p = await caller(request)
    pairs = await service(request).directory.effective_policies(p.sub)
    return web.json_response(
        {"sub": p.sub, "policies": [{"name": n, "document": pol.document} for n, pol in pairs]}
    )


async def change_password(request: web.Request) -> web.Response:
    """Any user may change their own password by proving the current one."""
    body = await read_body(request, m.ChangePassword)
    p = await caller(request)
    try:
        await service(request).change_own_password(
            p.sub, body.current_password, body.new_password, request.remote or "unknown"
        )
    except GrantError as exc:
        status = exc.status if exc.status == 429 else 403
        raise ApiError(status, exc.error, str(exc)) from None
    return web.Response(status=204)


# -- simulate, audit, keys -------------------------------------------------------------


async def simulate(request: web.Request) -> web.Response:
    body = await read_body(request, m.SimulateRequest)
    me = await require(request, "iam:SimulatePolicy", "iam/simulate")
    svc = service(request)
    sub = body.principal or me.sub
    try:
        subject = await svc.subject(sub)
    except GrantError:
        raise ApiError(
            404, "not_found", f"principal {sub!r} does not exist or is disabled",
            [{"field": "principal", "message": "no such user or service account"}],
        ) from None  # fmt: skip
    if body.policies is not None:
        pairs = [(f"inline[{i}]", parse_policy(doc)) for i, doc in enumerate(body.policies)]
    else:
        pairs = await svc.directory.effective_policies(sub)
    principal = Principal(sub, subject.username, subject.groups, subject.roles, "simulated", 0.0)
    ctx = request_context(principal, svc.clock(), body.context)
    decision = evaluate(pairs, body.action, body.resource, ctx)
    return web.json_response(
        {
            **decision.to_json(),
            "principal": sub,
            "action": body.action,
            "resource": body.resource,
            "evaluated_policies": [n for n, _ in pairs],
        }
    )


async def audit_query(request: web.Request) -> web.Response:
    await require(request, "iam:ReadAudit", "iam/audit")
    limit, token_ = page_params(request)
    q = request.query
    page = await service(request).audit.query(
        limit,
        token_,
        sub=q.get("sub"),
        action=q.get("action"),
        decision=q.get("decision"),
        source=q.get("source"),
    )
    return web.json_response({"items": page.entries, "next_page_token": page.next_token})


async def audit_source(request: web.Request, source: str) -> str:
    """Who may append audit records, and under which source they are stored.

    With a token: a caller allowed ``iam:WriteAudit``, under the source it names. Without
    one: Chainfire and FlareDB presenting their node's certificate (CN = a node id of the
    cluster), so they need no secret of their own; the node then comes from the
    certificate, not the body (``chainfire@node02``), so a node cannot speak for another.
    """
    if "Authorization" in request.headers:
        await require(request, "iam:WriteAudit", "iam/audit")
        return source
    node = request_common_name(request)
    if node is None or node not in request.app[NODE_IDS_KEY]:
        raise ApiError(
            401,
            "unauthorized",
            "a bearer token or a cluster node's client certificate is required",
            headers={"WWW-Authenticate": 'Bearer realm="plasmacloud-iam"'},
        )
    return f"{source.partition('@')[0]}@{node}"


async def certificate_identity(request: web.Request) -> web.Response:
    """Who a client certificate whose CN is ``name`` speaks for, with its effective
    policies: what Chainfire and FlareDB ask (with their node's certificate, the only
    callers answered) to decide a call made without a token."""
    if request_common_name(request) not in request.app[NODE_IDS_KEY]:
        raise ApiError(403, "forbidden", "only a cluster node's client certificate may look up")
    svc = service(request)
    name = request.match_info["name"]
    subject = await svc.certificate_subject(name) if NAME_RE.match(name) else None
    if subject is None:
        raise ApiError(404, "not_found", f"no enabled user or service account is named {name!r}")
    pairs = await svc.directory.effective_policies(subject.sub)
    return web.json_response(
        {
            "sub": subject.sub,
            "username": subject.username,
            "groups": list(subject.groups),
            "roles": list(subject.roles),
            "client_id": subject.client_id,
            "policies": [{"name": n, "document": pol.document} for n, pol in pairs],
        }
    )


async def audit_append(request: web.Request) -> web.Response:
    body = await read_body(request, m.AuditBatch)
    source = await audit_source(request, body.source)
    records = [
        AuditRecord(
            r.at, r.sub, r.action, r.resource,
            Decision(r.decision == "Allow", r.reason, r.policy, r.statement),
        )
        for r in body.records
    ]  # fmt: skip
    await service(request).audit.record_many(records, source)
    return web.json_response({"recorded": len(records)}, status=201)


async def rotate_keys(request: web.Request) -> web.Response:
    await require(request, "iam:RotateSigningKey", "iam/keys")
    key = await service(request).keyring.rotate()
    return web.json_response({"kid": key.kid, "created_at": key.created_at}, status=201)


def public_routes() -> list[Route]:
    """Everything except the entity CRUD."""
    return [
        Route("GET", "/health", health, "Liveness and store reachability", "Operations"),
        Route("GET", "/metrics", metrics, "Prometheus metrics", "Operations"),
        Route("GET", "/openapi.json", openapi, "This document", "Operations"),
        Route("GET", "/.well-known/openid-configuration", discovery, "OIDC discovery", "OAuth2"),
        Route("GET", "/.well-known/jwks.json", jwks, "Public signing keys (JWKS)", "OAuth2"),
        Route("POST", "/oauth2/token", token, "Token endpoint (RFC 6749)", "OAuth2"),
        Route("POST", "/oauth2/revoke", revoke, "Token revocation (RFC 7009)", "OAuth2"),
        Route("GET", "/v1/revocations", revocations, "Revoked, unexpired token ids", "OAuth2"),
        Route("GET", "/v1/self", whoami, "The caller's identity", "Self"),
        Route("GET", "/v1/self/policies", own_policies, "The caller's effective policies", "Self"),
        Route("POST", "/v1/self/password", change_password, "Change your own password", "Self",
              body=m.ChangePassword),
        Route(
            "POST", "/v1/policy/simulate", simulate, "Evaluate a request against policies",
            "Policies", "iam:SimulatePolicy", m.SimulateRequest,
        ),
        Route(
            "GET", "/v1/audit", audit_query, "Authorization decisions (filters: sub, action, "
            "decision, source: a service such as chainfire or one node's, chainfire@node02)",
            "Audit", "iam:ReadAudit", paginated=True,
        ),
        Route(
            "POST", "/v1/audit", audit_append, "Report decisions made by a service (a token "
            "allowed iam:WriteAudit, or a node's client certificate)", "Audit",
            "iam:WriteAudit", m.AuditBatch,
        ),
        Route(
            "GET", "/v1/certificate-identities/{name}", certificate_identity,
            "The principal a client certificate's CN names and its effective policies (a "
            "cluster node's certificate only: what Chainfire and FlareDB decide tokenless "
            "calls with)", "Self",
        ),
        Route("POST", "/v1/keys/rotate", rotate_keys, "Rotate the signing key", "Keys",
              "iam:RotateSigningKey"),
    ]  # fmt: skip


# -- the app -------------------------------------------------------------------------------


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Any) -> web.StreamResponse:
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except StoreUnavailable:
        # Chainfire is down or has no quorum: a retryable condition, not a bug.
        response = ApiError(
            503, "unavailable", "IAM's store is unavailable; retry", headers={"Retry-After": "1"}
        ).response()
    except web.HTTPException as exc:
        response = web.json_response(
            {"error": exc.reason.lower().replace(" ", "_"), "message": exc.text or exc.reason},
            status=exc.status,
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, name)
        response = ApiError(500, "internal", "internal error").response()
    service(request).metrics.requests.labels(request.method, name, str(response.status)).inc()
    return response


def create_app(svc: IamService, node_ids: Container[str] = frozenset()) -> web.Application:
    """The aiohttp application for one IAM node (``node_ids``: the cluster's nodes, whose
    certificates may append audit records)."""
    app = web.Application(middlewares=[_errors_and_metrics], client_max_size=1024 * 1024)
    app[SERVICE_KEY] = svc
    app[NODE_IDS_KEY] = node_ids
    routes: Sequence[Route] = [*public_routes(), *admin_routes()]
    for r in routes:
        app.router.add_route(r.method, r.path, r.handler)
    app[OPENAPI_KEY] = openapi_document(routes, __version__)
    return app


def iam_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The node's server TLS context, with client certificates optional.

    IAM's token endpoint serves people and tools (curl, JWT libraries) that hold no
    cluster client certificate, so unlike the peer ports it cannot require one.
    """
    ctx = server_context(config.tls)
    if ctx is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


async def start_server(
    svc: IamService,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    node_ids: Container[str] = frozenset(),
) -> web.AppRunner:
    """Start serving; the caller owns the runner and calls ``cleanup()`` to stop."""
    runner = web.AppRunner(create_app(svc, node_ids), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_address=True)
    await site.start()
    log.info(
        "IAM %s serving on %s:%d (tls=%s)", svc.settings.node_id, host, port, bool(ssl_context)
    )
    return runner


async def serve(
    config: NodeConfig,
    stop: asyncio.Event,
    store: KVStore | None = None,
    bootstrap_out: Path | None = None,
) -> None:
    """Run this node's IAM until ``stop`` is set.

    ``store`` defaults to Chainfire's system keyspace (:func:`open_store`). With
    ``bootstrap_out`` the first admin is created if the cluster has none and its
    credentials are written there (0600); they are never logged.
    """
    kv = store or open_store(config)
    svc = IamService(kv, settings_from_config(config))
    runner = await start_server(
        svc,
        config.listen_host,
        config.ports.iam_http,
        iam_ssl_context(config),
        ClusterNodeIds(config),
    )
    reloads = asyncio.create_task(watch_certificates(), name="tls-reload")
    try:
        if bootstrap_out is not None:
            outcome = await bootstrap_to_file(svc, bootstrap_out)
            log.info("bootstrap: %s (credentials file %s)", outcome.value, bootstrap_out)
        await stop.wait()
    finally:
        reloads.cancel()
        await runner.cleanup()
        await kv.close()
