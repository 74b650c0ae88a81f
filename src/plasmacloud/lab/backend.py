"""The node-backend contract: what the lab asks of processes, namespaces, VMs or SSH hosts."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Protocol


class LabError(RuntimeError):
    """A lab operation failed; the message says what and how to fix it."""


@dataclass(frozen=True)
class ServiceProcess:
    """One service of one node as the backend sees it."""

    service: str
    running: bool
    pid: int | None
    # why it is (not) running: "running", "not started", "exited", "stale record: ..."
    note: str


@dataclass(frozen=True)
class NodeStatus:
    """Every service of one node."""

    node_id: str
    services: list[ServiceProcess]

    @property
    def running(self) -> bool:
        return bool(self.services) and all(s.running for s in self.services)


class NodeBackend(Protocol):
    """Starts and stops the services of lab nodes; every backend implements this."""

    name: str

    def up(self) -> None:
        """Start every node's services (already running ones are left alone)."""
        ...

    def start_node(self, node_id: str) -> None:
        """Start one node's services."""
        ...

    def stop_node(self, node_id: str) -> None:
        """Stop one node gracefully (SIGTERM, then SIGKILL after a grace period)."""
        ...

    def kill_node(self, node_id: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to one node's services (SIGKILL: a crash, no cleanup)."""
        ...

    def node_status(self, node_id: str) -> NodeStatus:
        """What runs on one node right now."""
        ...

    def down(self) -> None:
        """Stop every node and verify nothing the lab started is left running."""
        ...
