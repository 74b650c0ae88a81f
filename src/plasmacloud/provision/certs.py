"""The cluster's certificates on disk: issue them for a spec, rotate, and check them.

Files land where the rendered ``cluster-config.json`` of each node says they are
(mapped into ``<out>/<node>/secrets``), so the names can never drift from the config.
"""

from __future__ import annotations

import datetime as dt
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.x509.oid import NameOID

from plasmacloud.common.config import ConfigError, NodeConfig, TLSConfig
from plasmacloud.common.files import write_atomic
from plasmacloud.iam.sealing import SEALING_KEY
from plasmacloud.provision import pki
from plasmacloud.provision.findings import Finding, error, warning
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.nodeconfig import tls_paths
from plasmacloud.provision.spec import ClusterSpec, NodeSpec

ADMIN_CLIENT = "admin"
WARN_EXPIRY = pki.RENEW_BEFORE  # warn exactly when `pki issue` would renew


@dataclass(frozen=True)
class NodeCert:
    """One node's issued files and whether this run wrote them."""

    node_id: str
    issued: pki.IssuedCert
    changed: bool


def expected_sans(spec: ClusterSpec, node: NodeSpec) -> tuple[list[str], list[str]]:
    """(DNS names, IPs) a node's certificate must carry: id, hostname, FQDN and IP."""
    return pki.node_sans(node.node_id, [node.host], spec.domain), [str(node.ip)]


def node_tls(out: OutputLayout, node: NodeSpec) -> TLSConfig:
    """The node's TLS paths in the output tree (from its rendered config when present)."""
    try:
        tls = NodeConfig.load(out.config_path(node.node_id)).tls
    except ConfigError:
        tls = tls_paths(node)
    return out.local_tls(node.node_id, tls)


def _read_or_none(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def issue_cluster(
    spec: ClusterSpec,
    out: OutputLayout,
    nodes: list[str] | None = None,
    force: bool = False,
    days: int = 365,
) -> list[NodeCert]:
    """Issue (or keep) certificates for ``nodes`` (default all) and the admin client.

    Needs the CA (``pki init``). ``force`` reissues even valid certificates (rotation).
    """
    ca = pki.load_ca(out.pki_dir)
    sealing = pki.init_sealing_key(out.pki_dir).read_bytes()
    results = []
    for node in spec.nodes:
        if nodes and node.node_id not in nodes:
            continue
        copy = out.secrets_dir(node.node_id) / SEALING_KEY
        if _read_or_none(copy) != sealing:
            write_atomic(copy, sealing, pki.KEY_MODE)
        tls = node_tls(out, node)
        before = _read_or_none(tls.cert_file)
        dns, ips = expected_sans(spec, node)
        issued = pki.issue_node(
            ca, tls.cert_file.parent, node.node_id, dns, ips, days=days, force=force
        )
        results.append(NodeCert(node.node_id, issued, _read_or_none(issued.cert_path) != before))
    if not nodes:
        pki.issue_client(ca, out.clients_dir, ADMIN_CLIENT, days=days, force=force)
    return results


ROLLOVER_STEPS = ("start", "promote", "finish")


def ca_rollover(spec: ClusterSpec, out: OutputLayout, step: str, days: int = 365) -> pki.CA:
    """One step of a CA rollover (see :mod:`plasmacloud.provision.pki`), then every node's
    and the admin client's files brought in line: the trust bundle copied beside each
    certificate, and at ``promote`` every certificate reissued by the new CA."""
    if step == "start":
        # a name of its own: two trusted CAs of one subject leave chain building to luck
        made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        pki.start_ca_rollover(out.pki_dir, f"PlasmaCloud CA ({spec.name}, {made})")
    elif step == "promote":
        pki.promote_next_ca(out.pki_dir)
    elif step == "finish":
        pki.finish_ca_rollover(out.pki_dir)
    else:
        raise ValueError(f"unknown CA rollover step {step!r}; expected one of {ROLLOVER_STEPS}")
    issue_cluster(spec, out, force=step == "promote", days=days)
    return pki.load_ca(out.pki_dir)


def _mode_finding(path: Path, want: int, node: str) -> Finding | None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode == want:
        return None
    return error(
        "PF008-cert-permissions",
        f"{path} has mode {mode:04o}, expected {want:04o}",
        f"chmod {want:04o} {path}",
        node,
    )


def _missing(path: Path, node: str, expected: set[str]) -> Finding:
    # Name the files that are there but not under the names the config uses: the
    # seed's certificates existed all along as ca-cert.pem, cert.pem and key.pem.
    strays = sorted(
        p.name
        for p in path.parent.glob("*")
        if p.suffix in (".pem", ".crt", ".key", ".cer") and p.name not in expected
    )
    hint = f" (found {', '.join(strays)}: misnamed?)" if strays else ""
    return error(
        "PF001-cert-missing",
        f"{path} does not exist but cluster-config.json names it{hint}",
        f"rename the file to {path.name} or run `plasma pki issue`",
        node,
    )


def check_node(
    spec: ClusterSpec, out: OutputLayout, node: NodeSpec, ca: pki.CA | None
) -> list[Finding]:
    """Every certificate problem of one node, checked against the files its config names."""
    nid = node.node_id
    tls = node_tls(out, node)
    named = (tls.ca_file, tls.cert_file, tls.key_file)
    missing = [p for p in named if not p.exists()]
    if missing:
        return [_missing(p, nid, {p.name for p in named}) for p in missing]
    findings = [
        f
        for f in (
            _mode_finding(tls.ca_file, pki.CERT_MODE, nid),
            _mode_finding(tls.cert_file, pki.CERT_MODE, nid),
            _mode_finding(tls.key_file, pki.KEY_MODE, nid),
        )
        if f
    ]
    try:
        cert, key, node_ca = (
            pki.load_cert(tls.cert_file),
            pki.load_key(tls.key_file),
            pki.load_cert(tls.ca_file),
        )
    except (ValueError, pki.PKIError) as exc:
        return [
            *findings,
            error("PF009-cert-unreadable", f"{nid}: {exc}", "reissue: `plasma pki rotate`", nid),
        ]
    if not pki.key_matches(cert, key):
        findings.append(
            error(
                "PF007-key-mismatch",
                f"{tls.key_file} is not the key of {tls.cert_file}",
                f"`plasma pki rotate --node {nid}`",
                nid,
            )
        )
    if ca is not None and tls.ca_file.read_bytes() != ca.trust_pem:
        findings.append(
            error(
                "PF003-cert-untrusted",
                f"{tls.ca_file} is not the cluster's trusted CA set ({ca.cert_path})",
                f"`plasma pki issue --node {nid}` copies the right ca.crt",
                nid,
            )
        )
    if not pki.signed_by(cert, node_ca):
        findings.append(
            error(
                "PF003-cert-untrusted",
                f"{tls.cert_file} does not chain to {tls.ca_file}",
                f"`plasma pki rotate --node {nid}`",
                nid,
            )
        )
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or cns[0].value != nid:
        findings.append(
            error(
                "PF002-cert-wrong-node",
                f"{tls.cert_file} was issued for {cns[0].value if cns else '?'!s}, not {nid}",
                f"`plasma pki rotate --node {nid}`",
                nid,
            )
        )
    dns, ips = expected_sans(spec, node)
    have_dns, have_ips = pki.cert_sans(cert)
    lacking = sorted(set(dns) - have_dns) + sorted(set(ips) - have_ips)
    if lacking:
        findings.append(
            error(
                "PF004-cert-san-mismatch",
                f"{tls.cert_file} lacks SANs {', '.join(lacking)} (spec changed since issuing?)",
                f"`plasma pki issue --node {nid}` reissues with the spec's names",
                nid,
            )
        )
    left = pki.expires_at(cert) - dt.datetime.now(dt.UTC)
    if left <= dt.timedelta(0):
        findings.append(
            error("PF005-cert-expired", f"{tls.cert_file} has expired", "`plasma pki rotate`", nid)
        )
    elif left < WARN_EXPIRY:
        findings.append(
            warning(
                "PF006-cert-expiring",
                f"{tls.cert_file} expires in {left.days} day(s)",
                f"`plasma pki rotate --node {nid}`",
                nid,
            )
        )
    return findings


def check_cluster(spec: ClusterSpec, out: OutputLayout) -> list[Finding]:
    """Certificate findings for every node (plus a missing/broken CA)."""
    findings: list[Finding] = []
    ca: pki.CA | None = None
    try:
        ca = pki.load_ca(out.pki_dir)
    except (pki.PKIError, ValueError) as exc:
        findings.append(error("PF010-ca-missing", str(exc), "`plasma pki init`"))
    if ca is not None and pki.expires_at(ca.cert) - dt.datetime.now(dt.UTC) < WARN_EXPIRY:
        findings.append(
            warning(
                "PF006-cert-expiring",
                f"the CA {ca.cert_path} expires within {WARN_EXPIRY.days} days",
                "create a new CA and reissue every certificate",
            )
        )
    for node in spec.nodes:
        findings += check_node(spec, out, node, ca)
    return findings
