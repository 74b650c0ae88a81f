"""The PKI page: every certificate file under the given directories with its expiry, and
the problems preflight would flag for a provisioned cluster.

Only ``*.crt`` files are read: private keys never leave their files, not even their names
matter here.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from plasmacloud.provision import pki
from plasmacloud.provision.findings import Finding

# preflight's certificate checks of a provisioned cluster (certs.check_cluster), if any
CertFindings = Callable[[], list[Finding]]


def _cn(name: x509.Name) -> str | None:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _verdict(days_left: float) -> str:
    """ "expired", "expiring" (when `plasma pki issue` would renew it) or "ok"."""
    if days_left <= 0:
        return "expired"
    return "expiring" if days_left < pki.RENEW_BEFORE.days else "ok"


def certificate_doc(path: Path, name: str, dir_ca: Path, now: dt.datetime) -> dict[str, Any]:
    """One certificate file (shown as ``name``): names, expiry, whether it chains to the
    ``ca.crt`` beside it, else to ``dir_ca``; an ``error`` instead when it does not parse."""
    doc: dict[str, Any] = {"file": name}
    try:
        cert = pki.load_cert(path)
    except (OSError, ValueError) as exc:
        return doc | {"error": f"{type(exc).__name__}: {exc}", "status": "unreadable"}
    left = (pki.expires_at(cert) - now).total_seconds() / 86400
    ca_path = next((c for c in (path.with_name(pki.CA_CERT), dir_ca) if c.is_file()), None)
    chains: bool | None = None
    if ca_path is not None and ca_path != path:
        try:
            chains = pki.signed_by(cert, pki.load_cert(ca_path))
        except (OSError, ValueError):
            chains = False
    dns, ips = pki.cert_sans(cert)
    return doc | {
        "subject": _cn(cert.subject),
        "issuer": _cn(cert.issuer),
        "ca": _is_ca(cert),
        "not_after": pki.expires_at(cert).isoformat(timespec="seconds"),
        "days_left": int(left),
        "sans": sorted(dns) + sorted(ips),
        "chains_to_ca": chains,
        "status": _verdict(left) if chains is not False else "untrusted",
    }


def pki_doc(dirs: Sequence[Path], findings: CertFindings | None = None) -> dict[str, Any]:
    """Every ``*.crt`` under ``dirs`` (soonest expiry first, named relative to the dirs'
    common parent) and preflight's findings."""
    now = dt.datetime.now(dt.UTC)
    present = [d for d in dirs if d.is_dir()]
    base = Path(os.path.commonpath(present)) if present else None
    certs = [
        certificate_doc(p, str(p.relative_to(base)), d / pki.CA_CERT, now)
        for d in present
        if base is not None
        for p in sorted(d.rglob("*.crt"))
    ]
    certs.sort(key=lambda c: (c.get("days_left", -1), c["file"]))
    return {
        "dir": str(base) if base else None,
        "certificates": certs,
        "findings": [f.model_dump(mode="json") for f in findings()] if findings else None,
    }
