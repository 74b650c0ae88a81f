"""What a lab is: how many nodes, on which loopback addresses and ports, with TLS or not.

A :class:`LabSpec` is saved in the lab's ``lab.json`` so every later command (status,
env, start, down) sees the same addresses without re-deriving them from flags.
"""

from __future__ import annotations

import random
import socket
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plasmacloud.common.config import PeerConfig, ServicePorts

DEFAULT_FIRST_IP = IPv4Address("127.0.0.11")
# The netns lab's default subnet (the seed's): it exists only inside namespaces and on the
# lab's own bridge, never on a real network. Tests use other private /24s so they can run
# beside a developer's lab.
NETNS_SUBNET = IPv4Network("192.168.100.0/24")
NETNS_FIRST_IP = IPv4Address("192.168.100.11")


class LabSpec(BaseModel):
    """Shape of a lab: nodes ``node01..nodeNN`` on consecutive loopback addresses (nodeNN
    on the NNth), less the ones removed since (``plasma lab remove-node``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_count: int = Field(default=3, ge=1, le=9)
    first_ip: IPv4Address = DEFAULT_FIRST_IP
    ports: ServicePorts = Field(default_factory=lambda: ServicePorts.model_validate({}))
    tls: bool = True
    cluster_name: str = "plasmacloud-lab"
    # loopback: nodes are 127.0.0.x on this host; netns: nodes live in the lab's own
    # network namespaces on a private /24 (default NETNS_SUBNET)
    network: Literal["loopback", "netns"] = "loopback"
    # node ids taken out of the cluster (`plasma lab remove-node`): no longer members
    removed: tuple[str, ...] = ()
    # node ids added to the running cluster (`plasma lab add-node`): their configs say
    # bootstrap: false, so a restart never makes them found a cluster of their own
    joined: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _loopback_only(self) -> LabSpec:
        # Network safety: the process lab never sends traffic outside 127.0.0.0/8.
        last = self.first_ip + (self.node_count - 1)
        if self.network == "netns":
            net = self.netns_subnet
            if not net.is_private or net.is_loopback or last not in net:
                raise ValueError(f"netns lab addresses must all be inside one private /24 ({net})")
        elif not (self.first_ip.is_loopback and last.is_loopback):
            raise ValueError(
                f"lab addresses {self.first_ip}..{last} must all be inside 127.0.0.0/8"
            )
        return self

    @property
    def netns_subnet(self) -> IPv4Network:
        """The /24 a netns lab's nodes (and its bridge, at .1) live on."""
        return IPv4Network(f"{self.first_ip}/24", strict=False)

    @property
    def node_ids(self) -> list[str]:
        """Node ids of the members in order: node01, node02, ..."""
        numbered = [f"node{i:02d}" for i in range(1, self.node_count + 1)]
        return [n for n in numbered if n not in self.removed]

    def ip_of(self, node_id: str) -> IPv4Address:
        """Address of one node (nodeNN's is the NNth from ``first_ip``, removed or not)."""
        digits = node_id.removeprefix("node")
        if not node_id.startswith("node") or not digits.isdigit():
            raise ValueError(f"{node_id} is not a lab node id (node01, node02, ...)")
        number = int(digits)
        if not 1 <= number <= self.node_count:
            raise ValueError(f"{node_id} is not a node of this lab")
        return self.first_ip + (number - 1)

    def peers(self) -> list[PeerConfig]:
        """The whole cluster as every node's config lists it."""
        return [
            PeerConfig(node_id=n, hostname=n, ip=self.ip_of(n), ports=self.ports)
            for n in self.node_ids
        ]

    def client_endpoints(self, scheme: str | None = None) -> list[str]:
        """Chainfire client URLs of every node (``https://`` when the lab uses TLS)."""
        scheme = scheme or ("https" if self.tls else "http")
        return [f"{scheme}://{self.ip_of(n)}:{self.ports.chainfire_client}" for n in self.node_ids]


def busy_ports(spec: LabSpec) -> list[str]:
    """``ip:port`` of every lab listener something else already holds (empty = all free)."""
    if spec.network == "netns":
        return []  # every node gets a fresh namespace: nothing else can hold its ports
    busy = []
    for node_id in spec.node_ids:
        for port in spec.ports.model_dump().values():
            addr = (str(spec.ip_of(node_id)), port)
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(addr)
                except OSError:
                    busy.append(f"{addr[0]}:{addr[1]}")
    return busy


def scratch_spec(node_count: int = 3, tls: bool = True, attempts: int = 20) -> LabSpec:
    """A spec on a random 127.x.y.0/24 with free ports: for tests and benchmarks that must
    not collide with a developer's lab on 127.0.0.11-13 or with each other."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        spec = LabSpec(
            node_count=node_count,
            first_ip=IPv4Address(f"127.{rng.randint(100, 250)}.{rng.randint(1, 250)}.11"),
            tls=tls,
        )
        if not busy_ports(spec):
            return spec
    raise RuntimeError(f"no free loopback address range found in {attempts} attempts")
