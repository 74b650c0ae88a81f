"""The one model of a running cluster that validation, chaos and the CLI work on.

A :class:`ClusterTarget` says where the nodes are (their configs), how to dial them (the
operator's TLS, IAM's admin), what they run, and what the caller may do to them: node
control, partitions, power cuts, a whole-cluster restart. Whoever knows how the nodes were
started builds it (the lab for a lab directory, its SSH and QEMU backends for machines
and VMs, validation for a ``cluster.yaml``); nothing here depends on which.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from plasmacloud.cluster.control import NodeControl, Partitioner, PowerSwitch
from plasmacloud.cluster.probe import ClusterView, probe_cluster, wait_cluster_ready
from plasmacloud.cluster.services import Service
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.common.tls import client_context
from plasmacloud.iam.credentials import AdminCredentials

# stops every node's services, starts them again and waits until the cluster is ready
Restart = Callable[[], Awaitable[None]]
# raises ClusterError unless healthy with one agreed leader within the timeout (seconds)
ReadyWait = Callable[[float], Awaitable[ClusterView]]
# takes a node out of every service and adds it back under its name with empty data (a
# replaced machine); the callable says each step
ReplaceNode = Callable[[str, Callable[[str], None]], Awaitable[None]]


@dataclass(frozen=True)
class ClusterTarget:
    """A running cluster and what may be done to it."""

    name: str  # how its nodes run, recorded in reports: "process", "netns", "ssh", "qemu", "spec"
    configs: list[NodeConfig]
    tls: TLSConfig
    services: tuple[Service, ...]
    # IAM's bootstrap admin, for the token checks (None: IAM checks say it is missing)
    admin: AdminCredentials | None = None
    control: NodeControl | None = None  # None: its nodes can only be looked at
    # a ready wait that knows more than the probe (the lab's fails early when a service
    # process exits); None: poll the probe
    ready_wait: ReadyWait | None = None
    restart: Restart | None = None
    partitioner: Partitioner | None = None
    no_partition: str = ""  # why there is no partitioner (the error a user sees)
    power: PowerSwitch | None = None
    replace_node: ReplaceNode | None = None  # None: membership changes are not rehearsed
    # how long a fault's recovery may take before giving up (seconds)
    recover_timeout_s: float = 60.0

    @property
    def node_ids(self) -> list[str]:
        return [c.node_id for c in self.configs]

    @property
    def ssl_ctx(self) -> ssl.SSLContext | None:
        return client_context(self.tls) if self.tls.enabled else None

    def runs(self, service: str) -> bool:
        """True if the cluster runs a service of that registry name."""
        return any(s.name == service for s in self.services)

    async def probe(self) -> ClusterView:
        """Health, members and leader as every node reports them."""
        return await probe_cluster(self.configs, self.services, self.tls)

    async def wait_ready(self, timeout: float) -> ClusterView:
        """Until every node is healthy and all agree on one leader (ClusterError after
        ``timeout`` seconds)."""
        if self.ready_wait is not None:
            return await self.ready_wait(timeout)
        return await wait_cluster_ready(self.configs, self.services, self.tls, timeout)
