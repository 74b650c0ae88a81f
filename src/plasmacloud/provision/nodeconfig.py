"""Spec -> per-node :class:`~plasmacloud.common.config.NodeConfig` (``cluster-config.json``)."""

from __future__ import annotations

from ipaddress import IPv4Address

from plasmacloud.common.config import NodeConfig, PeerConfig, Role, TLSConfig
from plasmacloud.iam.sealing import SEALING_KEY
from plasmacloud.provision.pki import CA_CERT
from plasmacloud.provision.spec import SECRETS_DIR, ClusterSpec, NodeSpec


def hosts_map(spec: ClusterSpec) -> dict[str, IPv4Address]:
    """hostname (and FQDN) -> IP for every node, so peers resolve without DNS."""
    hosts: dict[str, IPv4Address] = {}
    for n in spec.nodes:
        for name in (n.host, spec.fqdn(n)):
            if name:
                hosts[name] = n.ip
    return hosts


def tls_paths(node: NodeSpec) -> TLSConfig:
    """Where the node's TLS files live on the node: exactly the names `plasma pki` writes."""
    return TLSConfig(
        ca_file=SECRETS_DIR / CA_CERT,
        cert_file=SECRETS_DIR / f"{node.node_id}.crt",
        key_file=SECRETS_DIR / f"{node.node_id}.key",
    )


def node_config(spec: ClusterSpec, node: NodeSpec) -> NodeConfig:
    """The node's ``cluster-config.json``: itself, the Raft voters, ports, TLS, hosts."""
    members = [n for n in spec.nodes if n.role == Role.CONTROL_PLANE or n is node]
    return NodeConfig(
        cluster_name=spec.name,
        node_id=node.node_id,
        hostname=node.host,
        ip=node.ip,
        role=node.role,
        bootstrap=node.bootstrap,
        peers=[
            PeerConfig(node_id=n.node_id, hostname=n.host, ip=n.ip, ports=spec.ports)
            for n in members
        ],
        ports=spec.ports,
        tls=tls_paths(node),
        hosts=hosts_map(spec),
        raft=spec.raft,
        chainfire=spec.chainfire,
        flaredb=spec.flaredb,
        sealing_key_file=SECRETS_DIR / SEALING_KEY,
    )
