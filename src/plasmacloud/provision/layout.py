"""Where ``plasma render`` and ``plasma pki`` put things inside the output directory.

::

    <out>/flake.nix, hosts, dnsmasq.conf, RUNBOOK.md, modules/plasmacloud.nix
    <out>/ipxe/boot.ipxe, <out>/ipxe/<mac-with-hyphens>.ipxe
    <out>/pki/ca.crt, ca.key (0400, never shipped), clients/admin.crt/.key
    <out>/<node>/configuration.nix, disko.nix
    <out>/<node>/secrets/   -> /etc/nixos/secrets on the node:
        cluster-config.json, cluster-config.schema.json, ca.crt, <node>.crt, <node>.key
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.provision.spec import SECRETS_DIR


@dataclass(frozen=True)
class OutputLayout:
    """Paths inside one render output directory."""

    root: Path

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def clients_dir(self) -> Path:
        return self.pki_dir / "clients"

    @property
    def ipxe_dir(self) -> Path:
        return self.root / "ipxe"

    def node_dir(self, node_id: str) -> Path:
        return self.root / node_id

    def secrets_dir(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "secrets"

    def config_path(self, node_id: str) -> Path:
        return self.secrets_dir(node_id) / "cluster-config.json"

    def local(self, node_id: str, node_path: Path) -> Path:
        """Where a file the node sees under /etc/nixos/secrets lives in this tree."""
        try:
            rel = node_path.relative_to(SECRETS_DIR)
        except ValueError:
            return node_path  # not a secrets path: it lives outside the rendered tree
        return self.secrets_dir(node_id) / rel

    def local_tls(self, node_id: str, tls: TLSConfig) -> TLSConfig:
        """The node's TLS config with paths mapped into this tree (for local checks)."""
        return tls.model_copy(
            update={
                "ca_file": self.local(node_id, tls.ca_file),
                "cert_file": self.local(node_id, tls.cert_file),
                "key_file": self.local(node_id, tls.key_file),
            }
        )

    def local_config(self, config: NodeConfig) -> NodeConfig:
        """A node's config with its secrets (TLS files, sealing key) mapped into this
        tree, for acting as that node from the provisioning host."""
        sealing = config.sealing_key_file
        return config.model_copy(
            update={
                "tls": self.local_tls(config.node_id, config.tls),
                "sealing_key_file": self.local(config.node_id, sealing) if sealing else None,
            }
        )
