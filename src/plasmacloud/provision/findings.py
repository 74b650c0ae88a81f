"""Check results shared by ``plasma preflight`` and ``plasma pki check``.

Every check has a stable id (``PF001-cert-missing``) so scripts, docs and tests can
refer to it, a message saying what is wrong where, and a fix hint.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Finding(BaseModel):
    """One problem found by a check."""

    model_config = ConfigDict(frozen=True)

    id: str
    severity: Severity
    node: str | None = None
    message: str
    fix: str


def error(id: str, message: str, fix: str, node: str | None = None) -> Finding:
    """An error finding (preflight fails)."""
    return Finding(id=id, severity=Severity.ERROR, node=node, message=message, fix=fix)


def warning(id: str, message: str, fix: str, node: str | None = None) -> Finding:
    """A warning finding (reported, preflight still passes)."""
    return Finding(id=id, severity=Severity.WARNING, node=node, message=message, fix=fix)


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when any finding is an error."""
    return any(f.severity == Severity.ERROR for f in findings)
