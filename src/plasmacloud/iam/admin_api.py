"""REST CRUD for users, groups, roles, service accounts and policies, and attachments.

Every endpoint needs an ``iam:*`` action on ``iam/<kind>/<name>`` (``iam/<kind>`` for
listings) allowed by the caller's policies, e.g. ``iam:CreateUser``, ``iam:ListPolicies``,
``iam:AttachPolicy``; the bootstrap admin's ``AdministratorAccess`` allows all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel, ValidationError

from plasmacloud.iam import api_models as m
from plasmacloud.iam.directory import (
    MODELS,
    DirectoryError,
    Entity,
    Kind,
    User,
)
from plasmacloud.iam.http_util import (
    ApiError,
    Handler,
    Route,
    invalid,
    page_params,
    path_name,
    read_body,
    require,
    service,
)
from plasmacloud.iam.passwords import new_client_secret


@dataclass(frozen=True, slots=True)
class KindSpec:
    """How one entity kind maps onto the API."""

    kind: Kind
    noun: str  # User, Group, ... (used in action names)
    plural: str
    create: type[m.NamedBody]
    update: type[BaseModel]


SPECS = (
    KindSpec(Kind.USER, "User", "Users", m.CreateUser, m.UpdateUser),
    KindSpec(Kind.GROUP, "Group", "Groups", m.CreateGroup, m.UpdateGroup),
    KindSpec(Kind.ROLE, "Role", "Roles", m.CreateGroup, m.UpdateGroup),
    KindSpec(
        Kind.SERVICE_ACCOUNT,
        "ServiceAccount",
        "ServiceAccounts",
        m.CreateServiceAccount,
        m.UpdateServiceAccount,
    ),
    KindSpec(Kind.POLICY, "Policy", "Policies", m.CreatePolicy, m.UpdatePolicy),
)


def _resource(kind: Kind, name: str | None = None) -> str:
    return f"iam/{kind.value}" + (f"/{name}" if name else "")


def _directory_error(exc: DirectoryError) -> ApiError:
    errors = [{"field": exc.field, "message": str(exc)}] if exc.field else None
    error = {404: "not_found", 409: "conflict", 422: "validation_failed"}.get(exc.status, "error")
    return ApiError(exc.status, error, str(exc), errors)


def _list(spec: KindSpec) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await require(request, f"iam:List{spec.plural}", _resource(spec.kind))
        limit, token = page_params(request)
        page = await service(request).directory.list_page(spec.kind, limit, token)
        return web.json_response(
            {"items": [e.public() for e in page.items], "next_page_token": page.next_token}
        )

    return handler


def _get(spec: KindSpec) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        name = path_name(request)
        await require(request, f"iam:Get{spec.noun}", _resource(spec.kind, name))
        try:
            entity = await service(request).directory.require(spec.kind, name)
        except DirectoryError as exc:
            raise _directory_error(exc) from None
        return web.json_response(entity.public())

    return handler


def _create(spec: KindSpec) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        body = await read_body(request, spec.create)
        name = body.name
        await require(request, f"iam:Create{spec.noun}", _resource(spec.kind, name))
        svc = service(request)
        fields = body.model_dump(exclude_none=True, exclude={"password"})
        extra: dict[str, str] = {}
        if isinstance(body, m.CreateUser) and body.password is not None:
            fields["password_hash"] = await svc.hasher.hash(body.password)
        if spec.kind == Kind.SERVICE_ACCOUNT:
            secret, fields["secret_hash"] = new_client_secret()
            extra = {"client_id": name, "client_secret": secret}
        entity = MODELS[spec.kind].model_validate(fields)
        try:
            await svc.directory.create(spec.kind, entity)
        except DirectoryError as exc:
            raise _directory_error(exc) from None
        return web.json_response({**entity.public(), **extra}, status=201)

    return handler


def _update(spec: KindSpec) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        name = path_name(request)
        body = await read_body(request, spec.update)
        await require(request, f"iam:Update{spec.noun}", _resource(spec.kind, name))
        svc = service(request)
        changes = body.model_dump(exclude_none=True, exclude={"password"})
        if isinstance(body, m.UpdateUser) and body.password is not None:
            changes["password_hash"] = await svc.hasher.hash(body.password)
        return await _apply(request, spec.kind, name, lambda e: e.model_copy(update=changes))

    return handler


async def _apply(
    request: web.Request, kind: Kind, name: str, change: Callable[[Entity], Entity]
) -> web.Response:
    def checked(entity: Entity) -> Entity:
        # model_copy skips validation; re-validate the result as a whole.
        return MODELS[kind].model_validate(change(entity).model_dump())

    try:
        entity = await service(request).directory.update(kind, name, checked)
    except DirectoryError as exc:
        raise _directory_error(exc) from None
    except ValidationError as exc:  # e.g. one attachment too many
        raise invalid(exc) from None
    return web.json_response(entity.public())


def _delete(spec: KindSpec) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        name = path_name(request)
        await require(request, f"iam:Delete{spec.noun}", _resource(spec.kind, name))
        try:
            await service(request).directory.delete(spec.kind, name)
        except DirectoryError as exc:
            raise _directory_error(exc) from None
        return web.Response(status=204)

    return handler


def _attach(kind: Kind, attr: str, param: str, action: str, add: bool) -> Handler:
    """PUT/DELETE ``/v1/<kind>/{name}/<attr>/{param}``: add or remove one attachment."""

    async def handler(request: web.Request) -> web.Response:
        name, other = path_name(request), path_name(request, param)
        await require(request, action, _resource(kind, name))

        def change(e: Entity) -> Entity:
            current = [x for x in getattr(e, attr) if x != other]
            return e.model_copy(update={attr: [*current, other] if add else current})

        return await _apply(request, kind, name, change)

    return handler


def _members(add: bool) -> Handler:
    """PUT/DELETE ``/v1/groups/{name}/members/{user}``: edits the user's group list."""

    async def handler(request: web.Request) -> web.Response:
        group, user = path_name(request), path_name(request, "user")
        await require(request, "iam:UpdateGroupMembers", _resource(Kind.GROUP, group))
        if await service(request).directory.get(Kind.GROUP, group) is None:
            raise ApiError(404, "not_found", f"group {group!r} does not exist")

        def change(e: Entity) -> Entity:
            assert isinstance(e, User)
            current = [g for g in e.groups if g != group]
            return e.model_copy(update={"groups": [*current, group] if add else current})

        return await _apply(request, Kind.USER, user, change)

    return handler


async def _list_members(request: web.Request) -> web.Response:
    """The users and service accounts in a group (a scan: directories are small)."""
    group = path_name(request)
    await require(request, "iam:GetGroup", _resource(Kind.GROUP, group))
    directory = service(request).directory
    if await directory.get(Kind.GROUP, group) is None:
        raise ApiError(404, "not_found", f"group {group!r} does not exist")
    members = await directory.referrers(Kind.GROUP, group)
    return web.json_response({"group": group, "members": members})


async def _reset_secret(request: web.Request) -> web.Response:
    name = path_name(request)
    await require(request, "iam:ResetServiceAccountSecret", _resource(Kind.SERVICE_ACCOUNT, name))
    secret, hashed = new_client_secret()
    try:
        await service(request).directory.update(
            Kind.SERVICE_ACCOUNT, name, lambda e: e.model_copy(update={"secret_hash": hashed})
        )
    except DirectoryError as exc:
        raise _directory_error(exc) from None
    return web.json_response({"client_id": name, "client_secret": secret})


def admin_routes() -> list[Route]:
    """The CRUD route table."""
    routes: list[Route] = []
    for s in SPECS:
        base = f"/v1/{s.kind.value}"
        tag = s.plural
        routes += [
            Route(
                "GET",
                base,
                _list(s),
                f"List {s.plural.lower()}",
                tag,
                f"iam:List{s.plural}",
                paginated=True,
            ),
            Route(
                "POST", base, _create(s), f"Create a {s.noun}", tag, f"iam:Create{s.noun}", s.create
            ),
            Route("GET", base + "/{name}", _get(s), f"Get a {s.noun}", tag, f"iam:Get{s.noun}"),
            Route(
                "PATCH",
                base + "/{name}",
                _update(s),
                f"Update a {s.noun}",
                tag,
                f"iam:Update{s.noun}",
                s.update,
            ),
            Route(
                "DELETE",
                base + "/{name}",
                _delete(s),
                f"Delete a {s.noun}",
                tag,
                f"iam:Delete{s.noun}",
            ),
        ]
        if s.kind != Kind.POLICY:
            path = base + "/{name}/policies/{policy}"
            routes += [
                Route(
                    "PUT",
                    path,
                    _attach(s.kind, "policies", "policy", "iam:AttachPolicy", True),
                    f"Attach a policy to a {s.noun}",
                    tag,
                    "iam:AttachPolicy",
                ),
                Route(
                    "DELETE",
                    path,
                    _attach(s.kind, "policies", "policy", "iam:DetachPolicy", False),
                    f"Detach a policy from a {s.noun}",
                    tag,
                    "iam:DetachPolicy",
                ),
            ]
        if s.kind in (Kind.USER, Kind.SERVICE_ACCOUNT):
            path = base + "/{name}/roles/{role}"
            routes += [
                Route(
                    "PUT",
                    path,
                    _attach(s.kind, "roles", "role", "iam:AssignRole", True),
                    f"Give a {s.noun} a role",
                    tag,
                    "iam:AssignRole",
                ),
                Route(
                    "DELETE",
                    path,
                    _attach(s.kind, "roles", "role", "iam:UnassignRole", False),
                    f"Take a role from a {s.noun}",
                    tag,
                    "iam:UnassignRole",
                ),
            ]
    member = "/v1/groups/{name}/members/{user}"
    routes += [
        Route(
            "GET",
            "/v1/groups/{name}/members",
            _list_members,
            "List a group's members",
            "Groups",
            "iam:GetGroup",
        ),
        Route(
            "PUT",
            member,
            _members(True),
            "Add a user to a group",
            "Groups",
            "iam:UpdateGroupMembers",
        ),
        Route(
            "DELETE",
            member,
            _members(False),
            "Remove a user from a group",
            "Groups",
            "iam:UpdateGroupMembers",
        ),
        Route(
            "POST",
            "/v1/service-accounts/{name}/secret",
            _reset_secret,
            "Issue a new client secret",
            "ServiceAccounts",
            "iam:ResetServiceAccountSecret",
        ),
    ]
    return routes
