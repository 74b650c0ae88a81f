"""IAM's part of the checklist: discovery and JWKS on every node, and a token issued by
each node (the bootstrap admin's client credentials) verified by the next node's
Chainfire and FlareDB, which must also refuse the same token with its signature broken.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import grpc

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.cluster.probe import ClusterView, client_target, dial
from plasmacloud.cluster.services import iam_base_url
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.common.config import NodeConfig
from plasmacloud.flaredb.client import Client, Error, node_url
from plasmacloud.flaredb.models import Statement
from plasmacloud.validate.results import RPC_TIMEOUT_S, NodeResult

_TIMEOUT = aiohttp.ClientTimeout(total=RPC_TIMEOUT_S)


async def _request(t: ClusterTarget, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    """(status, JSON or text) of one IAM call with the operator's TLS material."""
    async with (
        aiohttp.ClientSession(timeout=_TIMEOUT) as s,
        s.request(method, url, ssl=t.ssl_ctx or False, **kw) as r,
    ):
        text = await r.text()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text[:200]


async def _discovery_one(t: ClusterTarget, cfg: NodeConfig) -> tuple[NodeResult, str | None]:
    base = iam_base_url(cfg)
    try:
        status, doc = await _request(t, "GET", base + "/.well-known/openid-configuration")
        if status != 200 or not isinstance(doc, dict):
            return NodeResult(cfg.node_id, False, f"discovery: HTTP {status} {doc}"), None
        status, jwks = await _request(t, "GET", base + "/.well-known/jwks.json")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return NodeResult(cfg.node_id, False, f"{type(exc).__name__}: {exc}"), None
    keys = jwks.get("keys", []) if status == 200 and isinstance(jwks, dict) else []
    kids = ", ".join(str(k.get("kid")) for k in keys)
    issuer = doc.get("issuer")
    ok = bool(keys) and bool(doc.get("token_endpoint"))
    evidence = f"issuer {issuer}, JWKS HTTP {status} with {len(keys)} key(s) ({kids})"
    return NodeResult(cfg.node_id, ok, evidence), str(issuer)


async def check_discovery(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """OIDC discovery and a non-empty JWKS on every node, one issuer for the cluster."""
    pairs = [await _discovery_one(t, cfg) for cfg in t.configs]
    issuers = {iss for _r, iss in pairs if iss}
    if len(issuers) <= 1:
        return [r for r, _iss in pairs]
    return [NodeResult(r.node_id, False, f"{r.evidence} (issuers differ)") for r, _ in pairs]


def forged(token: str) -> str:
    """The same token with its signature's last characters changed (must be refused)."""
    tail = "AAAA" if not token.endswith("AAAA") else "BBBB"
    return token[:-4] + tail


async def _chainfire_verdict(t: ClusterTarget, cfg: NodeConfig, token: str) -> str:
    """'accepted' or the gRPC status a Range with ``token`` got on ``cfg``'s node."""
    try:
        async with dial(client_target(cfg), t.tls) as channel:
            await rpc_pb2_grpc.KVStub(channel).Range(
                rpc_pb2.RangeRequest(key=b"/plasmacloud/validate/iam"),
                metadata=(("token", token),),
                timeout=RPC_TIMEOUT_S,
            )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return "accepted"


def _flaredb_verdict(t: ClusterTarget, cfg: NodeConfig, token: str) -> str:
    """'accepted' or the HTTP status a ``SELECT 1`` with ``token`` got on ``cfg``'s node."""
    try:
        Client(node_url(cfg), t.ssl_ctx, RPC_TIMEOUT_S, token=token).query([Statement("SELECT 1")])
    except Error as exc:
        return f"HTTP {getattr(exc, 'status', None)}"
    return "accepted"


async def _token_one(t: ClusterTarget, cfg: NodeConfig, other: NodeConfig) -> NodeResult:
    admin = t.admin
    if admin is None:
        return NodeResult(cfg.node_id, False, "no bootstrap admin credentials to log in with")
    form = {
        "grant_type": "client_credentials",
        "client_id": admin.client_id,
        "client_secret": admin.client_secret,
    }
    try:
        status, body = await _request(t, "POST", iam_base_url(cfg) + "/oauth2/token", data=form)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return NodeResult(cfg.node_id, False, f"token: {type(exc).__name__}: {exc}")
    if status != 200 or not isinstance(body, dict) or "access_token" not in body:
        return NodeResult(cfg.node_id, False, f"token: HTTP {status} {body}")
    token = str(body["access_token"])
    seen = []
    ok = True
    if t.runs("chainfire"):
        good, bad = [await _chainfire_verdict(t, other, tok) for tok in (token, forged(token))]
        ok = ok and good == "accepted" and bad == "UNAUTHENTICATED"
        seen.append(f"{other.node_id} chainfire: token {good}, forged {bad}")
    if t.runs("flaredb"):
        good, bad = [
            await asyncio.to_thread(_flaredb_verdict, t, other, tok)
            for tok in (token, forged(token))
        ]
        ok = ok and good == "accepted" and bad == "HTTP 401"
        seen.append(f"{other.node_id} flaredb: token {good}, forged {bad}")
    expires = body.get("expires_in")
    return NodeResult(cfg.node_id, ok, f"issued (expires_in {expires}); " + "; ".join(seen))


async def check_tokens(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """Each node issues the admin a token; the next node's services verify it."""
    n = len(t.configs)
    return [await _token_one(t, cfg, t.configs[(i + 1) % n]) for i, cfg in enumerate(t.configs)]
