"""What every check is given and returns: the cluster under validation and per-node results.

Kept apart from the checks themselves so that the per-service check modules
(:mod:`.flaredb_checks`, :mod:`.iam_checks`, ...) and the checklist in :mod:`.checks`
share them without importing each other.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.common.tls import client_context
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.lab.probe import ClusterView
from plasmacloud.lab.services import ServiceSpec

RPC_TIMEOUT_S = 5.0
# stops every node's services, starts them again and waits until the cluster is ready
Restart = Callable[[], Awaitable[None]]


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


@dataclass(frozen=True)
class Target:
    """The cluster under validation: node configs, how to dial it, what runs on it."""

    configs: list[NodeConfig]
    tls: TLSConfig
    services: tuple[ServiceSpec, ...]
    view: ClusterView  # one probe shared by the checks that read members/leader/health
    # IAM's bootstrap admin, for the token checks (None: IAM checks say it is missing)
    admin: AdminCredentials | None = None
    # given only when the caller opted into the persistence check
    restart: Restart | None = None

    @property
    def ssl_ctx(self) -> ssl.SSLContext | None:
        return client_context(self.tls) if self.tls.enabled else None

    def runs(self, service: str) -> bool:
        """True if the cluster runs a service of that registry name."""
        return any(s.name == service for s in self.services)


CheckFn = Callable[[Target], Awaitable[list[NodeResult]]]
