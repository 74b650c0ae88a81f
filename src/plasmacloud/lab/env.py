"""``plasma lab env``: shell exports for etcdctl, curl and ``plasma`` against a lab's
cluster, from its node configs and the operator's TLS, whatever runs the nodes."""

from __future__ import annotations

import shlex
from pathlib import Path

from plasmacloud.cluster.services import FLAREDB, IAM, Service, flaredb_url, iam_base_url
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.lab.layout import LAB_DIR_ENV

ETCDCTL_LOGIN_TIMEOUT = "20s"


def _iam_lines(configs: list[NodeConfig], tls: TLSConfig, admin: Path, secrets: bool) -> list[str]:
    """IAM's URLs, CA and the bootstrap admin (as etcdctl's user when ``secrets``)."""
    urls = [iam_base_url(cfg) for cfg in configs]
    lines = [f"export IAM_URL={urls[0]}", f"export IAM_URLS={','.join(urls)}"]
    if tls.enabled:
        lines.append(f"export IAM_CACERT={tls.ca_file}")
    if admin.exists():
        lines.append(f"export PLASMA_ADMIN_CREDENTIALS={admin}")
        if secrets and tls.enabled:  # auth is on only with TLS (lab.services.with_auth)
            # etcdctl 3.4 reads ETCDCTL_USER as --user: it logs in through Auth.Authenticate
            creds = AdminCredentials.read(admin)
            user = shlex.quote(f"{creds.username}:{creds.password}")
            lines.append(f"export ETCDCTL_USER={user}")
            # with a user etcdctl logs in while it dials, inside --dial-timeout (2 s by
            # default): argon2id on a slow node (a TCG VM) can take longer than that
            lines.append(f"export ETCDCTL_DIAL_TIMEOUT={ETCDCTL_LOGIN_TIMEOUT}")
    return lines


def env_lines(
    configs: list[NodeConfig],
    services: tuple[Service, ...],
    tls: TLSConfig,
    admin: Path,
    root: Path,
    secrets: bool = True,
) -> list[str]:
    """The exports for a cluster of these nodes, dialled with ``tls`` (the operator's
    certificate); ``admin``: IAM's bootstrap admin file, if written; ``root``: the lab."""
    scheme = "https" if tls.enabled else "http"
    endpoints = [f"{scheme}://{c.ip}:{c.ports.chainfire_client}" for c in configs]
    lines = ["export ETCDCTL_API=3", f"export ETCDCTL_ENDPOINTS={','.join(endpoints)}"]
    files = (("CACERT", tls.ca_file), ("CERT", tls.cert_file), ("KEY", tls.key_file))
    if tls.enabled:
        lines += [f"export ETCDCTL_{var}={f}" for var, f in files]
    names = {s.name for s in services}
    if FLAREDB.name in names:
        urls = [flaredb_url(cfg) for cfg in configs]
        lines += [f"export FLAREDB_URL={urls[0]}", f"export FLAREDB_URLS={','.join(urls)}"]
    if tls.enabled:
        # curl --cacert "$PLASMA_CACERT" --cert "$PLASMA_CERT" --key "$PLASMA_KEY"; plasma sql
        lines += [f"export PLASMA_{var}={f}" for var, f in files]
    if IAM.name in names:
        lines += _iam_lines(configs, tls, admin, secrets)
    lines.append(f"export {LAB_DIR_ENV}={root}")
    return lines
