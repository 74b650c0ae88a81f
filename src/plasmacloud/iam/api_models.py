"""Request bodies of the IAM REST API (validated with pydantic; published in OpenAPI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from plasmacloud.iam.directory import MAX_ATTACHMENTS, check_name
from plasmacloud.iam.policy import parse_policy

MIN_PASSWORD = 8


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _names(v: list[str] | None) -> list[str] | None:
    return None if v is None else [check_name(n) for n in v]


class _Attachments(_Body):
    description: str | None = Field(None, max_length=1024)
    policies: list[str] | None = Field(None, max_length=MAX_ATTACHMENTS)

    @field_validator("policies")
    @classmethod
    def _policy_names(cls, v: list[str] | None) -> list[str] | None:
        return _names(v)


class _Memberships(_Attachments):
    groups: list[str] | None = Field(None, max_length=MAX_ATTACHMENTS)
    roles: list[str] | None = Field(None, max_length=MAX_ATTACHMENTS)

    @field_validator("groups", "roles")
    @classmethod
    def _refs(cls, v: list[str] | None) -> list[str] | None:
        return _names(v)


class NamedBody(_Body):
    """A create body: carries the new entity's name."""

    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v)


class CreateUser(_Memberships, NamedBody):
    # None: the user signs in only with a client certificate whose CN is its name
    password: str | None = Field(None, min_length=MIN_PASSWORD, max_length=1024)


class UpdateUser(_Memberships):
    password: str | None = Field(None, min_length=MIN_PASSWORD, max_length=1024)
    disabled: bool | None = None


class CreateGroup(_Attachments, NamedBody):
    """Also the body for creating a role."""


class UpdateGroup(_Attachments):
    """Also the body for updating a role."""


class CreateServiceAccount(_Memberships, NamedBody):
    pass


class UpdateServiceAccount(_Memberships):
    disabled: bool | None = None


class CreatePolicy(NamedBody):
    description: str | None = Field(None, max_length=1024)
    document: dict[str, Any]

    @field_validator("document")
    @classmethod
    def _doc(cls, v: dict[str, Any]) -> dict[str, Any]:
        parse_policy(v)
        return v


class UpdatePolicy(_Body):
    description: str | None = Field(None, max_length=1024)
    document: dict[str, Any] | None = None

    @field_validator("document")
    @classmethod
    def _doc(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            parse_policy(v)
        return v


class SimulateRequest(_Body):
    """Evaluate ``action`` on ``resource`` for a principal's policies or given documents."""

    action: str = Field(min_length=1, max_length=256)
    resource: str = Field(min_length=1, max_length=1024)
    principal: str | None = Field(None, description="user:<name> or sa:<client_id>")
    policies: list[dict[str, Any]] | None = Field(
        None,
        max_length=MAX_ATTACHMENTS,
        description="policy documents to evaluate instead of a principal's",
    )
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("policies")
    @classmethod
    def _docs(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for doc in v or []:
            parse_policy(doc)
        return v


class AuditEntry(_Body):
    """One decision a service (Chainfire, FlareDB) reports to the audit log."""

    at: float
    sub: str = Field(min_length=1, max_length=200)
    action: str = Field(min_length=1, max_length=256)
    resource: str = Field(min_length=1, max_length=1024)
    decision: Literal["Allow", "Deny"]
    reason: Literal["explicit-deny", "allowed", "implicit-deny"]
    policy: str | None = Field(None, max_length=200)
    statement: str | None = Field(None, max_length=200)


class AuditBatch(_Body):
    source: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    records: list[AuditEntry] = Field(max_length=500)


class ChangePassword(_Body):
    """A user changing their own password (the current one proves it is them)."""

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=1024)
