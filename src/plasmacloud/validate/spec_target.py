"""Validate a real cluster from its provisioning spec (``cluster.yaml``): the node configs
are the ones ``plasma render`` writes (:func:`plasmacloud.provision.nodeconfig.node_config`),
the nodes are dialled at the addresses the spec gives, as the operator whose client
certificate ``plasma pki init`` issued (``<out>/pki/clients/admin.crt``) or any other."""

from __future__ import annotations

from pathlib import Path

from plasmacloud.cluster.services import SERVICES, Service
from plasmacloud.cluster.target import ClusterTarget, Restart
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.provision.certs import ADMIN_CLIENT
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.nodeconfig import node_config
from plasmacloud.provision.pki import CA_CERT
from plasmacloud.provision.spec import ClusterSpec


def spec_configs(spec: ClusterSpec) -> list[NodeConfig]:
    """The control-plane nodes' ``cluster-config.json`` as rendered from the spec."""
    return [node_config(spec, n) for n in spec.control_plane]


def operator_tls(
    out: Path, cacert: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> TLSConfig:
    """The CA and client certificate to dial with: given paths, else the render tree's."""
    layout = OutputLayout(out)
    return TLSConfig(
        enabled=True,
        ca_file=cacert or layout.pki_dir / CA_CERT,
        cert_file=cert or layout.clients_dir / f"{ADMIN_CLIENT}.crt",
        key_file=key or layout.clients_dir / f"{ADMIN_CLIENT}.key",
    )


def spec_target(
    spec: ClusterSpec,
    tls: TLSConfig,
    services: tuple[Service, ...] = SERVICES,
    admin: AdminCredentials | None = None,
    restart: Restart | None = None,
) -> ClusterTarget:
    """The spec's control-plane nodes, dialled as the operator (``restart``: how to
    restart them all, for the persistence check)."""
    return ClusterTarget(
        name="spec",
        configs=spec_configs(spec),
        tls=tls,
        services=services,
        admin=admin,
        restart=restart,
    )
