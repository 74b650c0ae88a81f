"""Validate a real cluster from its provisioning spec (``cluster.yaml``): the node configs
are the ones ``plasma render`` writes (:func:`plasmacloud.provision.nodeconfig.node_config`),
the nodes are dialled at the addresses the spec gives, as the operator whose client
certificate ``plasma pki init`` issued (``<out>/pki/clients/admin.crt``) or any other."""

from __future__ import annotations

from pathlib import Path

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.lab.services import SERVICES, ServiceSpec
from plasmacloud.provision.certs import ADMIN_CLIENT
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.nodeconfig import node_config
from plasmacloud.provision.pki import CA_CERT
from plasmacloud.provision.spec import ClusterSpec
from plasmacloud.validate.checks import run_checks
from plasmacloud.validate.target import CheckResult, Restart


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


async def validate_spec(
    spec: ClusterSpec,
    tls: TLSConfig,
    services: tuple[ServiceSpec, ...] = SERVICES,
    admin: AdminCredentials | None = None,
    restart: Restart | None = None,
) -> list[CheckResult]:
    """The checklist against the spec's control-plane nodes (``restart``: add persistence)."""
    return await run_checks(spec_configs(spec), tls, services, admin=admin, restart=restart)
