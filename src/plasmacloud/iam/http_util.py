"""Pieces every IAM HTTP handler shares: the route record, errors, bodies, auth checks."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from plasmacloud.iam.conditions import ContextValue
from plasmacloud.iam.directory import check_name, validation_errors
from plasmacloud.iam.jwtcheck import TokenError
from plasmacloud.iam.principal import Principal
from plasmacloud.iam.service import IamService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE_KEY: web.AppKey[IamService] = web.AppKey("iam_service", IamService)
B = TypeVar("B", bound=BaseModel)
MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint; the route table is also the source of the OpenAPI document."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    action: str | None = None  # the iam:* action the caller needs (None: public/own)
    body: type[BaseModel] | None = None
    paginated: bool = False


class ApiError(Exception):
    """Turned into ``{"error", "message", "errors"}`` JSON with ``status``."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.status = status
        self.error = error
        self.errors = errors or []
        self.headers = headers or {}
        super().__init__(message)

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.error, "message": str(self)}
        if self.errors:
            body["errors"] = self.errors
        return web.json_response(body, status=self.status, headers=self.headers)


def service(request: web.Request) -> IamService:
    return request.app[SERVICE_KEY]


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400 that says so."""
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None


async def read_body(request: web.Request, model: type[B]) -> B:
    """Validate the JSON body against ``model``; 422 lists every bad field by name."""
    raw = await read_json(request)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError) -> ApiError:
    """A 422 whose ``errors`` name every bad field."""
    errors = validation_errors(exc)
    message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return ApiError(422, "validation_failed", message, errors)


def path_name(request: web.Request, param: str = "name") -> str:
    """A path parameter that must be a valid entity name (400 naming it otherwise)."""
    value = request.match_info[param]
    try:
        return check_name(value)
    except ValueError as exc:
        raise ApiError(
            400, "validation_failed", f"{param}: {exc}", [{"field": param, "message": str(exc)}]
        ) from None


def page_params(request: web.Request) -> tuple[int, str | None]:
    """``?limit=`` (1..500, default 100) and ``?page_token=``."""
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        msg = f"must be an integer from 1 to {MAX_PAGE}"
        raise ApiError(
            400, "validation_failed", f"limit: {msg}", [{"field": "limit", "message": msg}]
        )
    token = request.query.get("page_token") or None
    if token is not None:
        try:
            check_name(token)
        except ValueError:
            raise ApiError(
                400,
                "validation_failed",
                "page_token: not a token this API returned",
                [{"field": "page_token", "message": "not a token this API returned"}],
            ) from None
    return int(raw), token


def request_context(request: web.Request) -> dict[str, ContextValue]:
    """Condition keys describing the HTTP request itself."""
    return {
        "plasma:SourceIp": request.remote or "",
        "plasma:SecureTransport": request.secure,
    }


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthorized",
            "a bearer token is required (Authorization: Bearer <access token>)",
            headers={"WWW-Authenticate": 'Bearer realm="plasmacloud-iam"'},
        )
    return token.strip()


async def caller(request: web.Request) -> Principal:
    """The verified caller (401 when the token is missing or refused)."""
    try:
        return await service(request).authenticate(bearer_token(request))
    except TokenError as exc:
        challenge = f'Bearer error="invalid_token", error_description="{exc.reason}"'
        raise ApiError(
            401,
            "invalid_token",
            f"token refused ({exc.reason})",
            headers={"WWW-Authenticate": challenge},
        ) from None


async def require(request: web.Request, action: str, resource: str) -> Principal:
    """The caller, if its policies allow ``action`` on ``resource`` (else 401/403)."""
    principal = await caller(request)
    decision = await service(request).authorize(
        principal, action, resource, request_context(request)
    )
    if not decision.allowed:
        raise ApiError(403, "forbidden", f"{principal.sub} may not {action} on {resource}")
    return principal
