"""etcd 3.4 as a lab service: the reference Chainfire is measured and tested against.

The benchmark runs a 3-node etcd through the same lab machinery (same configs, same
PKI, same process backend) so both systems get identical addresses, TLS and treatment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from plasmacloud.common.config import NodeConfig
from plasmacloud.lab.services import ServiceSpec

ETCD_BINARY = "etcd"


def etcd_argv(_config_path: Path, cfg: NodeConfig, _plasma: str) -> list[str]:
    """etcd flags equivalent to a Chainfire node started from the same config."""
    binary = shutil.which(ETCD_BINARY)
    if binary is None:
        raise FileNotFoundError("etcd is not installed (apt-get install etcd-server)")
    scheme = "https" if cfg.tls.enabled else "http"
    me = cfg.me
    client = f"{scheme}://{me.ip}:{me.ports.chainfire_client}"
    peer = f"{scheme}://{me.ip}:{me.ports.chainfire_peer}"
    cluster = ",".join(f"{p.node_id}={scheme}://{p.ip}:{p.ports.chainfire_peer}" for p in cfg.peers)
    argv = [
        binary,
        f"--name={cfg.node_id}",
        f"--data-dir={cfg.data_path('etcd')}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--listen-metrics-urls=http://{me.ip}:{me.ports.chainfire_metrics}",
        f"--initial-cluster={cluster}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={cfg.cluster_name}",
        "--logger=zap",
    ]
    if cfg.tls.enabled:
        t = cfg.tls
        argv += [
            f"--cert-file={t.cert_file}",
            f"--key-file={t.key_file}",
            f"--trusted-ca-file={t.ca_file}",
            f"--client-cert-auth={str(t.client_cert_auth).lower()}",
            f"--peer-cert-file={t.cert_file}",
            f"--peer-key-file={t.key_file}",
            f"--peer-trusted-ca-file={t.ca_file}",
            "--peer-client-cert-auth=true",
        ]
    return argv


ETCD = ServiceSpec(
    name="etcd",
    argv=etcd_argv,
    health_url=lambda c: f"http://{c.listen_host}:{c.ports.chainfire_metrics}/health",
    metrics_url=lambda c: f"http://{c.listen_host}:{c.ports.chainfire_metrics}/metrics",
)
