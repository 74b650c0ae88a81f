"""A node's config bundle: everything the first-boot agent needs, in one JSON document.

Served by the netboot server at ``/config/<mac>`` and consumed by ``plasma agent``:
network settings, the disk layout, and the files to install with their modes (the
secrets directory exactly as rendered and issued, plus the node's Nix files).
"""

from __future__ import annotations

import base64
from pathlib import Path

from pydantic import BaseModel

from plasmacloud.common.config import Role, ServicePorts
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.nodeconfig import hosts_map
from plasmacloud.provision.pki import CERT_MODE, KEY_MODE
from plasmacloud.provision.spec import SECRETS_DIR, ClusterSpec, DiskSpec, NodeSpec

NIXOS_DIR = Path("/etc/nixos")


class BundleFile(BaseModel):
    """One file to install on the node."""

    path: str  # absolute path on the node
    mode: int
    content_b64: str

    @property
    def content(self) -> bytes:
        return base64.b64decode(self.content_b64)


class ConfigBundle(BaseModel):
    """Who the node is and what to install on it."""

    cluster: str
    node_id: str
    hostname: str
    mac: str
    ip: str
    prefixlen: int
    gateway: str | None
    dns: list[str]
    interface: str
    role: Role
    ports: ServicePorts
    hosts: dict[str, str]
    disks: list[DiskSpec]
    ssh_authorized_keys: list[str]
    files: list[BundleFile]


def _file(path: Path, node_path: Path, mode: int) -> BundleFile:
    return BundleFile(
        path=str(node_path), mode=mode, content_b64=base64.b64encode(path.read_bytes()).decode()
    )


def make_bundle(spec: ClusterSpec, out: OutputLayout, node: NodeSpec) -> ConfigBundle:
    """Build the bundle from the rendered tree (FileNotFoundError if not rendered/issued)."""
    nid = node.node_id
    secrets = out.secrets_dir(nid)
    files = [
        _file(p, SECRETS_DIR / p.name, KEY_MODE if p.suffix == ".key" else CERT_MODE)
        for p in sorted(secrets.iterdir())
        if p.is_file() and not p.name.startswith(".")
    ]
    for name in ("configuration.nix", "disko.nix"):
        files.append(_file(out.node_dir(nid) / name, NIXOS_DIR / name, 0o644))
    return ConfigBundle(
        cluster=spec.name,
        node_id=nid,
        hostname=node.host,
        mac=node.mac,
        ip=str(node.ip),
        prefixlen=spec.network.cidr.prefixlen,
        gateway=str(spec.network.gateway) if spec.network.gateway else None,
        dns=[str(d) for d in spec.network.dns],
        interface=spec.network.interface,
        role=node.role,
        ports=spec.ports,
        hosts={name: str(ip) for name, ip in hosts_map(spec).items()},
        disks=node.disks,
        ssh_authorized_keys=spec.ssh_authorized_keys,
        files=files,
    )
