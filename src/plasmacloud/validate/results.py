"""What every check is given and returns: per-node results of checks on a cluster.

Kept apart from the checks themselves so that the per-service check modules
(:mod:`.flaredb_checks`, :mod:`.iam_checks`, ...) and the checklist in :mod:`.checks`
share them without importing each other. The cluster under validation is a
:class:`~plasmacloud.cluster.target.ClusterTarget`; a check also gets the one probe the
run took (members, leader, health), shared by the checks that read it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from plasmacloud.cluster.probe import ClusterView
from plasmacloud.cluster.target import ClusterTarget

RPC_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class NodeResult:
    """One check on one node: pass/fail and what was seen."""

    node_id: str
    ok: bool
    evidence: str


@dataclass(frozen=True)
class CheckResult:
    """One check across every node."""

    check_id: str
    title: str
    results: list[NodeResult]
    seconds: float = 0.0  # how long the check took (shown in the table and JSON)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)


CheckFn = Callable[[ClusterTarget, ClusterView], Awaitable[list[NodeResult]]]
