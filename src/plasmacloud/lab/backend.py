"""The node-backend contract: what the lab asks of processes, namespaces, VMs or SSH hosts.

Per-node control (start, stop, kill, status) is the cluster layer's
:class:`~plasmacloud.cluster.control.NodeControl`; a lab backend also brings every node up
and down.
"""

from __future__ import annotations

from typing import Protocol

from plasmacloud.cluster.control import ClusterError, NodeControl


class LabError(ClusterError):
    """A lab operation failed; the message says what and how to fix it."""


class LabUsageError(LabError):
    """The request does not fit this lab: a node it has not, a flag or operation its
    backend refuses (the message names the backend and what to do instead)."""


class NodeBackend(NodeControl, Protocol):
    """Starts and stops the services of lab nodes; every backend implements this."""

    def up(self) -> None:
        """Start every node's services (already running ones are left alone)."""
        ...

    def down(self) -> None:
        """Stop every node and verify nothing the lab started is left running."""
        ...
