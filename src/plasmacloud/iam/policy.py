"""AWS IAM-shaped JSON policies: parsing with field-named errors, and evaluation.

A policy document looks like AWS's::

    {"Version": "2012-10-17",
     "Statement": [{"Sid": "AppKeys", "Effect": "Allow",
                    "Action": ["chainfire:Range", "chainfire:Put"],
                    "Resource": "key/app/*",
                    "Condition": {"IpAddress": {"plasma:SourceIp": "127.0.0.0/8"}}}]}

Evaluation follows AWS: a request is denied unless some statement allows it, and any
matching ``Deny`` overrides every ``Allow``. Actions match case-insensitively, resources
case-sensitively, both with ``*``/``?`` wildcards.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from plasmacloud.iam.conditions import (
    OPERATORS,
    Condition,
    ConditionValueError,
    ContextValue,
    lookup_context,
    parse_condition_value,
)
from plasmacloud.iam.wildcard import any_of, covers_prefix, intersects_prefix, wildcard_match

log = logging.getLogger(__name__)

VERSIONS = ("2012-10-17", "2008-10-17")
Effect = Literal["Allow", "Deny"]
_ACTION_RE = re.compile(r"^(\*|[A-Za-z0-9*?-]+:[A-Za-z0-9*?]+)$")
_SID_RE = re.compile(r"^[A-Za-z0-9_-]{0,128}$")
_MAX_RESOURCE = 1024
_MAX_STATEMENTS = 100


class PolicyError(ValueError):
    """A policy document is invalid; ``errors`` lists ``(field path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in errors))


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement. Exactly one of ``actions``/``not_actions`` and of the resource pair is set."""

    effect: Effect
    sid: str | None = None
    actions: tuple[str, ...] | None = None
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    not_resources: tuple[str, ...] | None = None
    conditions: tuple[Condition, ...] = ()
    variables: bool = False  # Version 2012-10-17: ${key} in resources is substituted
    # compiled once: a statement is matched on every request (see __post_init__)
    _action_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _resource_re: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    needs_context: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        actions = self.actions if self.actions is not None else self.not_actions
        if actions is not None:
            object.__setattr__(self, "_action_re", any_of(actions, ignore_case=True))
        resources = self.resources if self.resources is not None else self.not_resources
        substituted = self.variables and any("${" in p for p in resources or ())
        if resources is not None and not substituted:
            object.__setattr__(self, "_resource_re", any_of(resources))
        object.__setattr__(self, "needs_context", substituted or bool(self.conditions))

    def matches(
        self,
        action: str,
        resource: str,
        context: Mapping[str, ContextValue],
        prefix: bool = False,
    ) -> bool:
        """Whether this statement applies to the request (its effect is then decisive).

        With ``prefix`` the request is for every resource starting with ``resource`` (an
        etcd range): an Allow applies only if it covers all of them, a Deny if it
        touches any of them.
        """
        if self._action_re is not None and (
            (self._action_re.fullmatch(action) is None) == (self.actions is not None)
        ):
            return False
        if not self._resource_applies(resource, prefix, context):
            return False
        return all(c.matches(context) for c in self.conditions)

    def _patterns(
        self, patterns: tuple[str, ...], context: Mapping[str, ContextValue], excluded: bool
    ) -> list[str]:
        if not self.variables:
            return list(patterns)
        out = []
        for p in patterns:
            expanded = expand_variables(p, context)
            if expanded is not None:
                out.append(expanded)
            elif excluded and self.effect == "Allow":
                out.append("*")  # cannot tell what is excluded: grant nothing
        return out

    def _resource_applies(
        self, resource: str, prefix: bool, context: Mapping[str, ContextValue]
    ) -> bool:
        if not prefix and self._resource_re is not None:
            listed = self._resource_re.fullmatch(resource) is not None
            return listed == (self.resources is not None)
        deny = self.effect == "Deny"
        if self.resources is not None:
            included = self._patterns(self.resources, context, excluded=False)
            if not prefix:
                return any(wildcard_match(p, resource) for p in included)
            test = intersects_prefix if deny else covers_prefix
            return any(test(p, resource) for p in included)
        excluded = self._patterns(self.not_resources or (), context, excluded=True)
        if not prefix:
            return not any(wildcard_match(p, resource) for p in excluded)
        if deny:  # applies unless the whole range is excluded
            return not any(covers_prefix(p, resource) for p in excluded)
        return not any(intersects_prefix(p, resource) for p in excluded)


_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def expand_variables(pattern: str, context: Mapping[str, ContextValue]) -> str | None:
    """Replace ``${key}`` with the context's value (``${$}`` is a literal ``$``).

    ``None`` when a variable is missing, multi-valued, or would smuggle a wildcard into
    the pattern; as in AWS, such a Resource then matches nothing.
    """
    missing = False

    def sub(m: re.Match[str]) -> str:
        nonlocal missing
        name = m.group(1).strip()
        if name == "$":
            return "$"
        value = lookup_context(context, name)
        if not isinstance(value, str) or not value or "*" in value or "?" in value:
            missing = True
            return ""
        return value

    out = _VARIABLE.sub(sub, pattern)
    return None if missing else out


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed, valid policy document; ``document`` is the JSON it was parsed from."""

    statements: tuple[Statement, ...]
    version: str = "2012-10-17"
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def needs_context(self) -> bool:
        """Whether a decision can depend on the request context (conditions, ${vars})."""
        return any(st.needs_context for st in self.statements)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request: allowed or not, and which statement decided it.

    ``reason`` is ``"explicit-deny"``, ``"allowed"`` or ``"implicit-deny"`` (no
    statement matched); ``policy``/``statement`` name the deciding statement when one did.
    """

    allowed: bool
    reason: Literal["explicit-deny", "allowed", "implicit-deny"]
    policy: str | None = None
    statement: str | None = None

    @property
    def effect(self) -> Effect:
        return "Allow" if self.allowed else "Deny"

    def to_json(self) -> dict[str, Any]:
        """JSON shape used by the simulate endpoint and the audit log."""
        return {
            "decision": self.effect,
            "reason": self.reason,
            "policy": self.policy,
            "statement": self.statement,
        }


def _string_list(
    raw: Any, path: str, errors: list[tuple[str, str]], pattern: re.Pattern[str] | None
) -> tuple[str, ...] | None:
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values:
        errors.append((path, "must be a non-empty string or list of strings"))
        return None
    out = []
    for i, v in enumerate(values):
        where = f"{path}[{i}]" if isinstance(raw, list) else path
        if not isinstance(v, str) or not v:
            errors.append((where, "must be a non-empty string"))
        elif len(v) > _MAX_RESOURCE or any(ord(ch) < 32 for ch in v):
            errors.append((where, "is too long or contains control characters"))
        elif pattern is not None and not pattern.match(v):
            errors.append(
                (where, f'{v!r} is not an action ("service:Name", wildcards * and ? allowed)')
            )
        else:
            out.append(v)
    return tuple(out)


def _parse_conditions(raw: Any, path: str, errors: list[tuple[str, str]]) -> tuple[Condition, ...]:
    if not isinstance(raw, dict):
        errors.append((path, "must be an object mapping operators to {key: values}"))
        return ()
    out = []
    for op, block in raw.items():
        where = f"{path}.{op}"
        if op not in OPERATORS:
            errors.append((where, f"unknown operator; use one of {', '.join(OPERATORS)}"))
            continue
        if not isinstance(block, dict) or not block:
            errors.append((where, "must be a non-empty object mapping context keys to values"))
            continue
        for key, values in block.items():
            kpath = f"{where}.{key}"
            vals = values if isinstance(values, list) else [values]
            if not vals:
                errors.append((kpath, "must list at least one value"))
                continue
            parsed = []
            for v in vals:
                try:
                    parsed.append(parse_condition_value(op, v))
                except ConditionValueError as exc:
                    errors.append((kpath, str(exc)))
            out.append(Condition(op, key, tuple(parsed), tuple(vals)))
    return tuple(out)


def _parse_statement(
    raw: Any, path: str, errors: list[tuple[str, str]], variables: bool
) -> Statement | None:
    if not isinstance(raw, dict):
        errors.append((path, "must be an object"))
        return None
    known = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
    for k in raw:
        if k not in known:
            errors.append((f"{path}.{k}", f"unknown field; allowed: {', '.join(sorted(known))}"))
    n_errors = len(errors)
    sid = raw.get("Sid")
    if sid is not None and (not isinstance(sid, str) or not _SID_RE.match(sid)):
        errors.append((f"{path}.Sid", "must be letters, digits, '_' or '-' (at most 128)"))
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        errors.append((f"{path}.Effect", 'must be "Allow" or "Deny"'))
    pairs: dict[str, tuple[str, ...] | None] = {}
    for a, b, pattern in (
        ("Action", "NotAction", _ACTION_RE),
        ("Resource", "NotResource", None),
    ):
        if (a in raw) == (b in raw):
            errors.append((f"{path}.{a}", f"exactly one of {a} or {b} is required"))
            continue
        name = a if a in raw else b
        pairs[name] = _string_list(raw[name], f"{path}.{name}", errors, pattern)
    conditions = (
        _parse_conditions(raw["Condition"], f"{path}.Condition", errors)
        if "Condition" in raw
        else ()
    )
    if len(errors) != n_errors:
        return None
    return Statement(
        effect=effect,  # type: ignore[arg-type]  # checked above
        sid=sid,
        actions=pairs.get("Action"),
        not_actions=pairs.get("NotAction"),
        resources=pairs.get("Resource"),
        not_resources=pairs.get("NotResource"),
        conditions=conditions,
        variables=variables,
    )


def parse_policy(doc: Any) -> Policy:
    """Validate a policy document; raises :class:`PolicyError` naming every bad field."""
    errors: list[tuple[str, str]] = []
    if not isinstance(doc, dict):
        raise PolicyError([("(document)", "must be a JSON object")])
    for k in doc:
        if k not in ("Version", "Statement", "Id"):
            errors.append((k, "unknown field; allowed: Id, Statement, Version"))
    version = doc.get("Version", "2012-10-17")
    if version not in VERSIONS:
        errors.append(("Version", f"must be one of {', '.join(VERSIONS)}"))
    raw_statements = doc.get("Statement")
    statements: list[Statement] = []
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        errors.append(("Statement", "must be a non-empty list of statements"))
    elif len(raw_statements) > _MAX_STATEMENTS:
        errors.append(("Statement", f"at most {_MAX_STATEMENTS} statements per policy"))
    else:
        for i, raw in enumerate(raw_statements):
            st = _parse_statement(raw, f"Statement[{i}]", errors, version == "2012-10-17")
            if st is not None:
                statements.append(st)
    if errors:
        raise PolicyError(errors)
    return Policy(statements=tuple(statements), version=str(version), document=doc)


def parse_policy_list(body: Mapping[str, Any]) -> list[tuple[str, Policy]]:
    """``{"policies": [{"name", "document"}]}`` (as IAM serves them) -> parsed pairs; an
    unreadable entry is skipped (it can only grant less)."""
    out = []
    for item in body.get("policies", []):
        try:
            out.append((str(item["name"]), parse_policy(item["document"])))
        except (KeyError, TypeError, PolicyError) as exc:
            log.warning("ignoring an unreadable policy from IAM: %s", exc)
    return out


def evaluate(
    policies: Mapping[str, Policy] | Sequence[tuple[str, Policy]],
    action: str,
    resource: str,
    context: Mapping[str, ContextValue] | None = None,
    prefix: bool = False,
) -> Decision:
    """Decide one request against named policies: explicit deny > allow > default deny.

    ``prefix``: the request covers every resource starting with ``resource`` (see
    :meth:`Statement.matches`).
    """
    ctx = context or {}
    pairs = policies.items() if isinstance(policies, Mapping) else policies
    allow: Decision | None = None
    for name, policy in pairs:
        for i, st in enumerate(policy.statements):
            if not st.matches(action, resource, ctx, prefix):
                continue
            label = st.sid or f"Statement[{i}]"
            if st.effect == "Deny":
                return Decision(False, "explicit-deny", name, label)
            if allow is None:
                allow = Decision(True, "allowed", name, label)
    return allow or Decision(False, "implicit-deny")
