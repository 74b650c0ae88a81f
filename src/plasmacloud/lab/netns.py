"""The ``netns`` backend: every node in its own network namespace on a bridge the lab owns.

::

    host: bridge pcl-<tag>-br 192.168.100.1/24
            |-- veth pcl-<tag>-h01 <-> eth0 in netns pcl-<tag>-node01 (192.168.100.11/24)
            |-- veth pcl-<tag>-h02 <-> eth0 in netns pcl-<tag>-node02 (192.168.100.12/24)
            ...

``<tag>`` is derived from the lab directory, so every object the lab creates carries a
prefix no other lab (and nothing else on the machine) uses, and teardown can find them
by name even when ``lab.json`` is gone. The namespaces get no default route and the
host gets no NAT or forwarding: the lab addresses exist only here. Before creating
anything we refuse if the host already routes any part of the subnet elsewhere.

Partitions are blackhole routes inside the namespaces (``ip route add blackhole``), so
packets between the two sides are silently dropped as on a cut cable, while the host
keeps reaching every node (the operator, the validator and the chaos clients stay
outside the partition). Services run through ``ip netns exec``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_network
from pathlib import Path
from typing import Any

from plasmacloud.lab.backend import LabError
from plasmacloud.lab.layout import LabLayout
from plasmacloud.lab.process import ProcessBackend
from plasmacloud.lab.services import ServiceSpec
from plasmacloud.lab.spec import NETNS_FIRST_IP, LabSpec
from plasmacloud.lab.state import LabState

NETNS_DIR = Path("/run/netns")
IP_TIMEOUT_S = 10.0


def netns_spec() -> LabSpec:
    """The seed's cluster: node01-03 on 192.168.100.11-13 inside namespaces."""
    return LabSpec(first_ip=NETNS_FIRST_IP, network="netns")


def scratch_netns_spec(attempts: int = 20) -> LabSpec:
    """A netns spec on a random private 10.x.y.0/24 nothing on this host routes: for tests
    and benchmarks that may run beside another netns lab (which holds the seed's subnet)."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        first = IPv4Address(f"10.{rng.randint(100, 250)}.{rng.randint(1, 250)}.11")
        spec = LabSpec(first_ip=first, network="netns")
        if not foreign_claims(spec.netns_subnet):
            return spec
    raise LabError(f"no free private /24 found in {attempts} attempts")


@dataclass(frozen=True)
class NetnsNames:
    """Names of everything one lab creates; all start with :attr:`prefix`."""

    prefix: str  # pcl-<6 hex>

    @classmethod
    def for_lab(cls, root: Path) -> NetnsNames:
        tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:6]
        return cls(f"pcl-{tag}")

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    def namespace(self, node_id: str) -> str:
        return f"{self.prefix}-{node_id}"

    def host_veth(self, node_id: str) -> str:
        # interface names are at most 15 bytes: pcl-xxxxxx-h01
        return f"{self.prefix}-h{node_id[-2:]}"

    def node_veth(self, node_id: str) -> str:
        return f"{self.prefix}-n{node_id[-2:]}"


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run ``ip [-n NS] ARGS``; a failure raises :class:`LabError` with ip's message."""
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise LabError("the `ip` command is missing (apt-get install iproute2)") from exc
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = ip("-j", *args)
    return json.loads(out) if out.strip() else []


def bridge_gateway(subnet: IPv4Network) -> str:
    """The host's address on the lab bridge, with prefix length (``192.168.100.1/24``)."""
    return f"{subnet.network_address + 1}/{subnet.prefixlen}"


def foreign_claims(subnet: IPv4Network, own_bridge: str | None = None) -> list[str]:
    """Routes and addresses on this host that touch ``subnet`` and are not the lab's own
    (on ``own_bridge``).

    Any such claim means lab traffic could leave through a real interface (or collide
    with another lab), so the netns backend refuses to start while one exists.
    """
    claims = []
    for route in _ip_json("route", "show"):
        dst, dev = str(route.get("dst", "")), str(route.get("dev", ""))
        if dst == "default" or dev == own_bridge:
            continue
        with contextlib.suppress(ValueError):
            if ip_network(dst, strict=False).overlaps(subnet):
                claims.append(f"route {dst} dev {dev}")
    for link in _ip_json("addr", "show"):
        dev = str(link.get("ifname", ""))
        infos = link.get("addr_info", [])
        for info in infos if isinstance(infos, list) else []:
            local = str(info.get("local", ""))
            ours = dev == own_bridge
            if not ours and info.get("family") == "inet" and IPv4Address(local) in subnet:
                claims.append(f"address {local} on {dev}")
    return claims


def lab_objects(names: NetnsNames) -> list[str]:
    """Namespaces, their mounts and links on this host that carry the lab's prefix
    (empty: none left)."""
    found = [f"netns {n}" for n in _namespaces() if n.startswith(names.prefix + "-")]
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    found += [
        f"mount {line.split()[1]}"
        for line in mounts
        if line.split()[1].startswith(f"{NETNS_DIR}/{names.prefix}-")
    ]
    for link in _ip_json("link", "show"):
        name = str(link.get("ifname", ""))
        if name.startswith(names.prefix + "-"):
            found.append(f"link {name}")
    return found


def _namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def create_network(names: NetnsNames, spec: LabSpec) -> None:
    """Bridge, one namespace + veth per node, addresses; no default routes, no NAT."""
    if spec.network != "netns":
        raise LabError("the netns backend needs a netns spec (192.168.100.x addresses)")
    subnet = spec.netns_subnet
    if claims := foreign_claims(subnet, names.bridge):
        raise LabError(
            f"this host already routes {subnet} ({'; '.join(claims)}); the netns lab "
            "refuses to start so its traffic can never reach a real network"
        )
    if names.bridge not in {str(link.get("ifname")) for link in _ip_json("link", "show")}:
        ip("link", "add", names.bridge, "type", "bridge")
        ip("addr", "add", bridge_gateway(subnet), "dev", names.bridge)
    ip("link", "set", names.bridge, "up")
    existing = set(_namespaces())
    for node_id in spec.node_ids:
        ns = names.namespace(node_id)
        if ns in existing:
            continue
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        host_end, node_end = names.host_veth(node_id), names.node_veth(node_id)
        ip("link", "del", host_end, check=False)  # a half-made pair from a failed run
        ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
        ip("link", "set", host_end, "master", names.bridge)
        ip("link", "set", host_end, "up")
        ip("link", "set", node_end, "netns", ns)
        ip("link", "set", node_end, "name", "eth0", ns=ns)
        ip("addr", "add", f"{spec.ip_of(node_id)}/{subnet.prefixlen}", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)


def destroy_network(names: NetnsNames) -> list[str]:
    """Kill whatever still runs in the lab's namespaces, delete namespaces, veths and the
    bridge; return what is left afterwards (empty on success)."""
    for ns in _namespaces():
        if not ns.startswith(names.prefix + "-"):
            continue
        # every process in a namespace this lab created is one the lab started
        for pid in ip("netns", "pids", ns, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        ip("netns", "del", ns, check=False)
    for link in _ip_json("link", "show"):
        name = str(link.get("ifname", ""))
        if name.startswith(names.prefix + "-") and name != names.bridge:
            ip("link", "del", name, check=False)
    ip("link", "del", names.bridge, check=False)
    return lab_objects(names)


def partition(names: NetnsNames, spec: LabSpec, side_a: list[str], side_b: list[str]) -> None:
    """Cut every link between ``side_a`` and ``side_b`` (both directions)."""
    for a in side_a:
        for b in side_b:
            if a == b:
                raise LabError(f"{a} cannot be on both sides of a partition")
            for src, dst in ((a, b), (b, a)):
                route = f"{spec.ip_of(dst)}/32"
                ip("route", "replace", "blackhole", route, ns=names.namespace(src))


def heal(names: NetnsNames, spec: LabSpec) -> None:
    """Remove every partition (blackhole route) in the lab's namespaces."""
    for node_id in spec.node_ids:
        ip("route", "flush", "type", "blackhole", ns=names.namespace(node_id), check=False)


def partitions(names: NetnsNames, spec: LabSpec) -> dict[str, list[str]]:
    """node -> the nodes it cannot reach right now."""
    by_ip = {str(spec.ip_of(n)): n for n in spec.node_ids}
    cut: dict[str, list[str]] = {}
    for node_id in spec.node_ids:
        routes = _ip_json("-n", names.namespace(node_id), "route", "show", "type", "blackhole")
        peers = [by_ip.get(str(r.get("dst", "")).removesuffix("/32"), "?") for r in routes]
        if peers:
            cut[node_id] = sorted(peers)
    return cut


def assert_lab_route(names: NetnsNames, spec: LabSpec) -> None:
    """Refuse to send anything to the lab addresses unless the host routes them through
    this lab's bridge (after `down` they would otherwise follow the default route out)."""
    for node_id in spec.node_ids:
        routes = _ip_json("route", "get", str(spec.ip_of(node_id)))
        dev = str(routes[0].get("dev", "")) if routes else ""
        if dev != names.bridge:
            raise LabError(
                f"{spec.ip_of(node_id)} is not routed through the lab bridge {names.bridge} "
                f"(via {dev or 'nothing'}); is the netns lab up?"
            )


class NetnsBackend(ProcessBackend):
    """Nodes as process groups inside per-node network namespaces (see module docs)."""

    name = "netns"

    def __init__(
        self, layout: LabLayout, state: LabState, services: tuple[ServiceSpec, ...]
    ) -> None:
        super().__init__(layout, state, services)
        self.names = NetnsNames.for_lab(layout.root)

    def up(self) -> None:
        create_network(self.names, self.state.spec)
        super().up()

    def start_node(self, node_id: str) -> None:
        self._check_node(node_id)
        if not (NETNS_DIR / self.names.namespace(node_id)).exists():
            raise LabError(f"namespace {self.names.namespace(node_id)} is missing; `lab up` first")
        super().start_node(node_id)

    def wrap_argv(self, node_id: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.names.namespace(node_id), *argv]

    def down(self) -> None:
        try:
            super().down()
        finally:
            left = destroy_network(self.names)
        if left:
            raise LabError(f"left behind after down: {', '.join(left)}")

    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        """Cut the links between two groups of nodes."""
        for n in [*side_a, *side_b]:
            self._check_node(n)
        partition(self.names, self.state.spec, side_a, side_b)

    def heal(self) -> None:
        """Restore every link."""
        heal(self.names, self.state.spec)
