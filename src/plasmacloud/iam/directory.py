"""IAM's entities (users, groups, roles, service accounts, policies) and their storage.

Each entity is one JSON value under ``/plasmacloud/iam/<kind>/<name>``; attachments are
name lists on the entity that holds them (a user's ``groups``, ``roles`` and
``policies``). Names are restricted to a safe alphabet so they can be used verbatim in
keys, URLs, resources and logs (an injection-looking name is a validation error).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from plasmacloud.iam.policy import Policy, PolicyError, parse_policy
from plasmacloud.iam.store import KVStore

ROOT = "/plasmacloud/iam/"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MAX_ATTACHMENTS = 100  # per list; keeps one entity's JSON and its evaluation small
NAME_RULE = "1-64 characters: letters, digits, '_', '.', '@', '-' (starting with a letter/digit)"


class Kind(StrEnum):
    """Entity kinds; the value is the URL and key segment."""

    USER = "users"
    GROUP = "groups"
    ROLE = "roles"
    SERVICE_ACCOUNT = "service-accounts"
    POLICY = "policies"


def check_name(value: str) -> str:
    """Validate an entity name (used as a pydantic validator and for path parameters)."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(f"must be {NAME_RULE}")
    return value


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = Field("", max_length=1024)
    policies: list[str] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    created_at: float = Field(default_factory=time.time)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)

    @field_validator("policies")
    @classmethod
    def _policy_names(cls, v: list[str]) -> list[str]:
        return [check_name(n) for n in v]

    def public(self) -> dict[str, Any]:
        """What the API returns (secrets excluded)."""
        return self.model_dump(exclude={"password_hash", "secret_hash"})


class User(Entity):
    groups: list[str] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    roles: list[str] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    disabled: bool = False
    password_hash: str | None = None


class Group(Entity):
    pass


class Role(Entity):
    pass


class ServiceAccount(Entity):
    """A machine identity; ``name`` is its OAuth2 ``client_id``."""

    roles: list[str] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    groups: list[str] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    disabled: bool = False
    secret_hash: str | None = None


class PolicyRecord(Entity):
    """A named policy document (``policies`` is unused on policies themselves)."""

    document: dict[str, Any]

    @field_validator("document")
    @classmethod
    def _valid(cls, v: dict[str, Any]) -> dict[str, Any]:
        parse_policy(v)  # raises PolicyError, reported with the field path
        return v


MODELS: dict[Kind, type[Entity]] = {
    Kind.USER: User,
    Kind.GROUP: Group,
    Kind.ROLE: Role,
    Kind.SERVICE_ACCOUNT: ServiceAccount,
    Kind.POLICY: PolicyRecord,
}


class DirectoryError(Exception):
    """A request the directory refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, field: str | None = None):
        self.status = status
        self.field = field
        super().__init__(message)


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """``[{"field": "document.Statement[0].Effect", "message": ...}]`` from pydantic."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, PolicyError):
            out += [{"field": f"{loc}.{p}", "message": m} for p, m in cause.errors]
        else:
            msg = str(cause) if cause is not None else err["msg"]
            out.append({"field": loc or "(body)", "message": msg})
    return out


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``next_token`` is ``None`` on the last page."""

    items: list[Entity]
    next_token: str | None


class Directory:
    """CRUD over the entities in the store."""

    def __init__(self, store: KVStore):
        self.store = store

    @staticmethod
    def key(kind: Kind, name: str) -> str:
        return f"{ROOT}{kind.value}/{name}"

    async def get(self, kind: Kind, name: str) -> Entity | None:
        kv = await self.store.get(self.key(kind, name))
        return MODELS[kind].model_validate_json(kv.value) if kv else None

    async def require(self, kind: Kind, name: str) -> Entity:
        found = await self.get(kind, name)
        if found is None:
            raise DirectoryError(404, f"{kind.value[:-1]} {name!r} does not exist")
        return found

    async def create(self, kind: Kind, entity: Entity) -> None:
        """Store a new entity; 409 if the name is taken."""
        await self._check_references(entity)
        if not await self.store.compare_and_swap(
            self.key(kind, entity.name), 0, entity.model_dump_json().encode()
        ):
            raise DirectoryError(409, f"{kind.value[:-1]} {entity.name!r} already exists", "name")

    async def save(self, kind: Kind, entity: Entity) -> None:
        await self._check_references(entity)
        await self.store.put(self.key(kind, entity.name), entity.model_dump_json().encode())

    async def update(self, kind: Kind, name: str, change: Callable[[Entity], Entity]) -> Entity:
        """Read-modify-write with compare-and-swap, so concurrent edits are never lost."""
        key = self.key(kind, name)
        for _ in range(10):
            kv = await self.store.get(key)
            if kv is None:
                raise DirectoryError(404, f"{kind.value[:-1]} {name!r} does not exist")
            new = change(MODELS[kind].model_validate_json(kv.value))
            await self._check_references(new)
            if await self.store.compare_and_swap(key, kv.version, new.model_dump_json().encode()):
                return new
        raise DirectoryError(409, f"{kind.value[:-1]} {name!r} is being changed concurrently")

    async def delete(self, kind: Kind, name: str) -> None:
        """Delete an entity; refused (409) while anything still refers to it."""
        users = await self.referrers(kind, name)
        if users:
            raise DirectoryError(
                409, f"{kind.value[:-1]} {name!r} is still attached to {', '.join(users[:10])}"
            )
        if not await self.store.delete(self.key(kind, name)):
            raise DirectoryError(404, f"{kind.value[:-1]} {name!r} does not exist")

    async def referrers(self, kind: Kind, name: str) -> list[str]:
        """``kind/name`` of every entity whose attachments name this one."""
        attr = {Kind.POLICY: "policies", Kind.GROUP: "groups", Kind.ROLE: "roles"}.get(kind)
        if attr is None:
            return []
        out = []
        for holder_kind in (Kind.USER, Kind.SERVICE_ACCOUNT, Kind.GROUP, Kind.ROLE):
            for kv in await self.store.range(f"{ROOT}{holder_kind.value}/"):
                entity = MODELS[holder_kind].model_validate_json(kv.value)
                if name in getattr(entity, attr, ()):
                    out.append(f"{holder_kind.value}/{entity.name}")
        return out

    async def list_page(self, kind: Kind, limit: int, after: str | None) -> Page:
        prefix = f"{ROOT}{kind.value}/"
        start = prefix + check_name(after) if after else None
        kvs = await self.store.range(prefix, start_after=start, limit=limit + 1)
        items = [MODELS[kind].model_validate_json(kv.value) for kv in kvs[:limit]]
        return Page(items, items[-1].name if len(kvs) > limit else None)

    async def _check_references(self, entity: Entity) -> None:
        # Attachments must name things that exist, or a typo silently grants nothing.
        refs: list[tuple[Kind, str, Sequence[str]]] = [(Kind.POLICY, "policies", entity.policies)]
        if isinstance(entity, User | ServiceAccount):
            refs += [(Kind.GROUP, "groups", entity.groups), (Kind.ROLE, "roles", entity.roles)]
        for kind, field_name, names in refs:
            for n in names:
                if await self.store.get(self.key(kind, n)) is None:
                    raise DirectoryError(422, f"{kind.value[:-1]} {n!r} does not exist", field_name)

    async def effective_policies(self, sub: str) -> list[tuple[str, Policy]]:
        """Every policy that applies to ``user:<name>`` or ``sa:<client_id>``."""
        kind, _, name = sub.partition(":")
        holder = await self.get(Kind.USER if kind == "user" else Kind.SERVICE_ACCOUNT, name)
        if holder is None or not isinstance(holder, User | ServiceAccount) or holder.disabled:
            return []
        names = list(holder.policies)
        for group_kind, members in ((Kind.GROUP, holder.groups), (Kind.ROLE, holder.roles)):
            for g in members:
                found = await self.get(group_kind, g)
                if found is not None:
                    names += found.policies
        out = []
        for pname in dict.fromkeys(names):
            rec = await self.get(Kind.POLICY, pname)
            if isinstance(rec, PolicyRecord):
                out.append((pname, parse_policy(rec.document)))
        return out
