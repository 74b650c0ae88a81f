"""Condition operators of the policy language (the ``Condition`` block of a statement).

A condition block maps an operator to ``{context key: value or [values]}``. Within one
operator every key must match (AND); the values listed for one key are alternatives (OR).
As in AWS IAM, a key missing from the request context makes a positive operator false
and a negated one (``StringNotEquals``, ``NotIpAddress``) true.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from plasmacloud.iam.wildcard import wildcard_match

ContextValue = str | bool | int | float | datetime | Sequence[str]
"""A request context value (``plasma:SourceIp``, ``plasma:CurrentTime``, ...)."""


class ConditionValueError(ValueError):
    """A condition value cannot be read by its operator (bad IP, bad date, ...)."""


def parse_date(value: Any) -> datetime:
    """ISO 8601 (``2026-01-01T00:00:00Z``) or epoch seconds, always returned aware (UTC)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        dt = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                dt = datetime.fromtimestamp(float(value), UTC)
            except ValueError:
                raise ConditionValueError(f"{value!r} is not an ISO 8601 date") from None
    else:
        raise ConditionValueError(f"{value!r} is not a date")
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _parse_network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ConditionValueError(f"{value!r} is not an IP address or CIDR range") from None


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConditionValueError(f'{value!r} is not a boolean ("true" or "false")')


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise ConditionValueError(f"{value!r} is not a string")


@dataclass(frozen=True, slots=True)
class _Operator:
    """How one operator reads policy values and compares a context value with one of them."""

    parse: Callable[[Any], Any]
    test: Callable[[Any, Any], bool]
    negated: bool = False


def _ip_in(ctx: Any, net: Any) -> bool:
    try:
        return ipaddress.ip_address(str(ctx)) in net
    except ValueError:
        return False


def _date_cmp(less: bool) -> Callable[[Any, Any], bool]:
    def test(ctx: Any, bound: Any) -> bool:
        try:
            when = parse_date(ctx)
        except ConditionValueError:
            return False
        return when < bound if less else when > bound

    return test


def _bool_eq(ctx: Any, want: Any) -> bool:
    try:
        return _parse_bool(ctx) == want
    except ConditionValueError:
        return False


OPERATORS: Mapping[str, _Operator] = {
    "StringEquals": _Operator(_as_str, lambda c, v: _as_str(c) == v),
    "StringNotEquals": _Operator(_as_str, lambda c, v: _as_str(c) == v, negated=True),
    "StringEqualsIgnoreCase": _Operator(_as_str, lambda c, v: _as_str(c).lower() == v.lower()),
    "StringLike": _Operator(_as_str, lambda c, v: wildcard_match(v, _as_str(c))),
    "StringNotLike": _Operator(_as_str, lambda c, v: wildcard_match(v, _as_str(c)), negated=True),
    "IpAddress": _Operator(_parse_network, _ip_in),
    "NotIpAddress": _Operator(_parse_network, _ip_in, negated=True),
    "DateLessThan": _Operator(parse_date, _date_cmp(less=True)),
    "DateGreaterThan": _Operator(parse_date, _date_cmp(less=False)),
    "Bool": _Operator(_parse_bool, _bool_eq),
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``operator: {key: values}`` entry; ``values`` are already parsed by the operator."""

    operator: str
    key: str
    values: tuple[Any, ...]
    raw: tuple[Any, ...]

    def matches(self, context: Mapping[str, ContextValue]) -> bool:
        """Whether the request context satisfies this condition."""
        op = OPERATORS[self.operator]
        present = lookup_context(context, self.key)
        if present is None:
            return op.negated
        ctx_values: Sequence[Any] = present if isinstance(present, list | tuple) else [present]
        hit = any(op.test(c, v) for c in ctx_values for v in self.values)
        return not hit if op.negated else hit


def lookup_context(context: Mapping[str, ContextValue], key: str) -> ContextValue | None:
    """A context value by key; keys are case-insensitive, as in AWS."""
    if key in context:
        return context[key]
    low = key.lower()
    for k, v in context.items():
        if k.lower() == low:
            return v
    return None


def parse_condition_value(operator: str, value: Any) -> Any:
    """Parse one policy value for ``operator``; raises :class:`ConditionValueError`."""
    return OPERATORS[operator].parse(value)
