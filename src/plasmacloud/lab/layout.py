"""Where a lab keeps its files, and the node configs written there.

::

    <lab>/lab.json                      state: spec, backend, recorded processes
    <lab>/pki/                          ca.crt, node0X.crt/.key, operator.crt/.key
    <lab>/node0X/cluster-config.json    the node's NodeConfig
    <lab>/node0X/data/                  service data (kept across down/up)
    <lab>/node0X/logs/<service>.log
    <lab>/admin.json                    IAM's bootstrap admin (0600), when the lab runs IAM
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic models: imported where used, so `plasma lab --help` stays light
    from plasmacloud.common.config import NodeConfig, TLSConfig
    from plasmacloud.lab.spec import LabSpec

LAB_DIR_ENV = "PLASMA_LAB_DIR"
OPERATOR_NAME = "operator"


def default_lab_dir() -> Path:
    """``$PLASMA_LAB_DIR``, else a per-user state dir (``$XDG_STATE_HOME/plasmacloud/lab``)."""
    if env := os.environ.get(LAB_DIR_ENV):
        return Path(env).expanduser()
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "plasmacloud" / "lab"


@dataclass(frozen=True)
class LabLayout:
    """Paths inside one lab directory."""

    root: Path

    @property
    def state_path(self) -> Path:
        return self.root / "lab.json"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def operator_cert(self) -> Path:
        return self.pki_dir / f"{OPERATOR_NAME}.crt"

    @property
    def operator_key(self) -> Path:
        return self.pki_dir / f"{OPERATOR_NAME}.key"

    @property
    def admin_credentials(self) -> Path:
        return self.root / "admin.json"

    def node_dir(self, node_id: str) -> Path:
        return self.root / node_id

    def config_path(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "cluster-config.json"

    def data_dir(self, node_id: str) -> Path:
        return self.node_dir(node_id) / "data"

    def log_path(self, node_id: str, service: str) -> Path:
        return self.node_dir(node_id) / "logs" / f"{service}.log"

    def operator_tls(self, spec: LabSpec) -> TLSConfig:
        """TLS material an operator tool (etcdctl, validate, tests) dials the lab with."""
        from plasmacloud.common.config import TLSConfig

        return TLSConfig(
            enabled=spec.tls,
            ca_file=self.ca_file,
            cert_file=self.operator_cert,
            key_file=self.operator_key,
        )

    def node_config(self, spec: LabSpec, node_id: str) -> NodeConfig:
        """The ``cluster-config.json`` of one lab node."""
        from plasmacloud.common.config import NodeConfig, TLSConfig
        from plasmacloud.iam.sealing import SEALING_KEY

        peers = spec.peers()
        return NodeConfig(
            cluster_name=spec.cluster_name,
            node_id=node_id,
            hostname=node_id,
            ip=spec.ip_of(node_id),
            bootstrap=node_id not in spec.joined,
            peers=peers,
            ports=spec.ports,
            tls=TLSConfig(
                enabled=spec.tls,
                ca_file=self.ca_file,
                cert_file=self.pki_dir / f"{node_id}.crt",
                key_file=self.pki_dir / f"{node_id}.key",
            ),
            data_dir=self.data_dir(node_id),
            sealing_key_file=self.pki_dir / SEALING_KEY,
            # Peers are named by hostname; the config resolves them without DNS.
            hosts={p.hostname: p.ip for p in peers},
            bind_address=None,
        )

    def write_configs(self, spec: LabSpec) -> dict[str, NodeConfig]:
        """Render and write every node's config (and create its data and log dirs)."""
        configs: dict[str, NodeConfig] = {}
        for node_id in spec.node_ids:
            cfg = self.node_config(spec, node_id)
            self.data_dir(node_id).mkdir(parents=True, exist_ok=True)
            (self.node_dir(node_id) / "logs").mkdir(exist_ok=True)
            cfg.dump(self.config_path(node_id))
            configs[node_id] = cfg
        return configs
