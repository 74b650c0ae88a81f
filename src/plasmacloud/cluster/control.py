"""Node control: what hurting and healing a cluster's nodes needs, whoever started them.

Each way of running nodes implements :class:`NodeControl` (the lab's process, netns and
qemu backends, real machines over SSH). Pausing a node is ``kill_node(SIGSTOP)`` and
resuming it ``kill_node(SIGCONT)``; cutting links (:class:`Partitioner`) and power
(:class:`PowerSwitch`) are separate because only some node runners can do them safely.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Protocol


class ClusterError(RuntimeError):
    """Talking to or controlling a cluster failed; the message says what and how to fix it."""


@dataclass(frozen=True)
class ServiceProcess:
    """One service of one node as its controller sees it."""

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


class NodeControl(Protocol):
    """Starts, stops and signals the services of one node at a time."""

    name: str  # how the nodes are run: "process", "netns", "ssh", "qemu"

    def start_node(self, node_id: str) -> None:
        """Start one node's services."""
        ...

    def stop_node(self, node_id: str) -> None:
        """Stop one node gracefully (SIGTERM, then SIGKILL after a grace period)."""
        ...

    def kill_node(self, node_id: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to one node's services (SIGKILL: a crash, no cleanup; SIGSTOP and
        SIGCONT: pause and resume)."""
        ...

    def node_status(self, node_id: str) -> NodeStatus:
        """What runs on one node right now."""
        ...


class Partitioner(Protocol):
    """Cuts and restores links between nodes."""

    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        """Cut every link between the two groups (both directions)."""
        ...

    def heal(self) -> None:
        """Restore every link."""
        ...


class PowerSwitch(Protocol):
    """Cuts and restores machines' power (VMs: see ``QemuBackend.cut_power``)."""

    def cut_power(self, node_id: str) -> None:
        """The machine stops dead, without warning."""
        ...

    def restore_power(self, node_id: str) -> None:
        """Power back on (the machine boots again); nothing if it was not cut."""
        ...
