"""The cluster's TLS PKI: one CA, per-node certificates, operator client certificates.

File names are exactly what ``cluster-config.json`` references (``ca.crt``,
``<node_id>.crt``, ``<node_id>.key``): the seed issued ``ca-cert.pem``/``cert.pem``/
``key.pem`` and had to rename every file by hand before the services could start.
Keys are ECDSA P-256 (fast to generate and to handshake), written 0400; certificates
0644. Every issuing function is idempotent: a valid existing file is kept.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plasmacloud.common.files import write_atomic
from plasmacloud.iam.sealing import SEALING_KEY, new_sealing_key

PrivateKey = ec.EllipticCurvePrivateKey

CA_CERT = "ca.crt"  # the trust bundle: the signing CA first, then any other trusted CA
CA_KEY = "ca.key"
# during a CA rollover: the next CA, trusted beside the current one until it signs
NEXT_CA_CERT = "ca-next.crt"
NEXT_CA_KEY = "ca-next.key"
CERT_MODE = 0o644
KEY_MODE = 0o400
# A certificate this close to expiry is reissued by the idempotent issue functions.
RENEW_BEFORE = dt.timedelta(days=30)


class PKIError(RuntimeError):
    """The PKI directory is missing or inconsistent; the message says how to fix it."""


@dataclass(frozen=True)
class CA:
    """The cluster CA, loaded in memory, and where its files live.

    ``trust_pem`` is what every node and client trusts (``ca.crt``, copied beside each
    certificate): the signing CA alone, or during a rollover the signing CA and the
    other one (see :func:`start_ca_rollover`).
    """

    cert: x509.Certificate
    key: PrivateKey
    cert_path: Path
    key_path: Path
    trust_pem: bytes

    def trusted(self) -> list[x509.Certificate]:
        """Every CA certificate in the trust bundle (the signing one first)."""
        return x509.load_pem_x509_certificates(self.trust_pem)


@dataclass(frozen=True)
class IssuedCert:
    """Paths of one issued certificate, its key and the CA certificate copied beside them."""

    cert_path: Path
    key_path: Path
    ca_path: Path


# -- small helpers ---------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_cert(path: Path) -> x509.Certificate:
    """Read a PEM certificate."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_key(path: Path) -> PrivateKey:
    """Read a PEM EC private key (the only kind this PKI issues)."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{path}: not an EC private key; reissue it with `plasma pki rotate`")
    return key


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    pub = cert.public_key()
    return isinstance(pub, ec.EllipticCurvePublicKey) and (
        pub.public_numbers() == key.public_key().public_numbers()
    )


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when ``cert`` was issued and signed by ``ca``."""
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def cert_sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses as strings) in the certificate's subjectAltName."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    dns = set(ext.get_values_for_type(x509.DNSName))
    ips = {str(i) for i in ext.get_values_for_type(x509.IPAddress)}
    return dns, ips


def expires_at(cert: x509.Certificate) -> dt.datetime:
    """The certificate's notAfter as an aware UTC datetime."""
    return cert.not_valid_after_utc


def _builder(
    subject: x509.Name, issuer: x509.Name, key: PrivateKey, days: int, ca: bool
) -> x509.CertificateBuilder:
    """What every certificate of ours has: a CN subject, a fresh serial, validity from 5
    minutes ago (clock skew) for ``days``, and the constraints and key usages of a CA
    (signs certificates) or of a leaf (TLS with ECDHE: signatures and key agreement)."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not ca,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


# -- CA --------------------------------------------------------------------------------


def init_sealing_key(pki_dir: Path) -> Path:
    """The cluster's sealing key in ``pki_dir`` (0400), created once; never replaced, since
    it is what opens the signing keys already stored."""
    path = Path(pki_dir) / SEALING_KEY
    if not path.exists():
        write_atomic(path, new_sealing_key(), KEY_MODE)
    os.chmod(path, KEY_MODE)
    return path


def init_ca(pki_dir: Path, common_name: str = "PlasmaCloud CA", days: int = 3650) -> CA:
    """Create the CA in ``pki_dir`` (ca.crt 0644, ca.key 0400), or load it if present."""
    pki_dir = Path(pki_dir)
    if not ((pki_dir / CA_CERT).exists() or (pki_dir / CA_KEY).exists()):
        _new_ca_files(pki_dir / CA_CERT, pki_dir / CA_KEY, common_name, days)
    return load_ca(pki_dir)


def _new_ca_files(cert_path: Path, key_path: Path, common_name: str, days: int) -> None:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, name, key, days, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    # Key first: a crash between the two writes leaves a key without a cert, which
    # load_ca reports, rather than a cert whose key is lost.
    write_atomic(key_path, _key_pem(key), KEY_MODE)
    write_atomic(cert_path, _cert_pem(cert), CERT_MODE)


def load_ca(pki_dir: Path) -> CA:
    """Load an existing CA from ``pki_dir``; a missing or mismatched pair is a PKIError."""
    pki_dir = Path(pki_dir)
    cert_path, key_path = pki_dir / CA_CERT, pki_dir / CA_KEY
    for p in (cert_path, key_path):
        if not p.exists():
            raise PKIError(f"{p} does not exist; create the CA with `plasma pki init`")
    cert, key = load_cert(cert_path), load_key(key_path)  # the bundle's first: the signer
    if not key_matches(cert, key):
        raise PKIError(f"{key_path} is not the key of {cert_path}; restore the pair from backup")
    trust = cert_path.read_bytes()
    return CA(cert=cert, key=key, cert_path=cert_path, key_path=key_path, trust_pem=trust)


# -- CA rollover: a new CA with an overlap in which both are trusted --------------------
#
# 1. start:   the next CA is made; every node and client trusts both (the old signs)
# 2. promote: the next CA signs; every certificate is reissued by it (both still trusted,
#             so peers and clients holding old certificates keep working meanwhile)
# 3. finish:  the old CA is no longer trusted anywhere
# Between the steps the operator ships the files to every node (services reload trust
# and certificates within seconds, without a restart) and waits until all have them.


def rollover_phase(pki_dir: Path) -> str:
    """Where a rollover stands: "none", "started" (next CA trusted, old signs) or
    "promoted" (new CA signs, old still trusted)."""
    pki_dir = Path(pki_dir)
    if (pki_dir / NEXT_CA_CERT).exists():
        return "started"
    return "promoted" if len(load_ca(pki_dir).trusted()) > 1 else "none"


def _write_trust(pki_dir: Path, certs: list[x509.Certificate]) -> None:
    write_atomic(pki_dir / CA_CERT, b"".join(_cert_pem(c) for c in certs), CERT_MODE)


def start_ca_rollover(pki_dir: Path, common_name: str, days: int = 3650) -> CA:
    """Step 1: make the next CA (ca-next.crt/.key) and trust it beside the current one."""
    pki_dir = Path(pki_dir)
    current = load_ca(pki_dir)
    if rollover_phase(pki_dir) != "none":
        raise PKIError(
            f"a CA rollover is already under way in {pki_dir} ({rollover_phase(pki_dir)}); "
            "finish it first (`plasma pki ca-rollover promote` / `finish`)"
        )
    _new_ca_files(pki_dir / NEXT_CA_CERT, pki_dir / NEXT_CA_KEY, common_name, days)
    _write_trust(pki_dir, [current.cert, load_cert(pki_dir / NEXT_CA_CERT)])
    return load_ca(pki_dir)


def promote_next_ca(pki_dir: Path) -> CA:
    """Step 2: the next CA becomes the signing one (the old one stays trusted); the caller
    reissues every certificate with it."""
    pki_dir = Path(pki_dir)
    if rollover_phase(pki_dir) != "started":
        raise PKIError(f"no CA rollover started in {pki_dir}; `plasma pki ca-rollover start`")
    old, new = load_cert(pki_dir / CA_CERT), load_cert(pki_dir / NEXT_CA_CERT)
    new_key = load_key(pki_dir / NEXT_CA_KEY)
    if not key_matches(new, new_key):
        raise PKIError(f"{pki_dir / NEXT_CA_KEY} is not the key of {pki_dir / NEXT_CA_CERT}")
    # the trust bundle (new first) before the key: a crash between the writes leaves a
    # pair load_ca refuses by name rather than certificates signed by an untrusted key
    _write_trust(pki_dir, [new, old])
    write_atomic(pki_dir / CA_KEY, _key_pem(new_key), KEY_MODE)
    (pki_dir / NEXT_CA_KEY).unlink()
    (pki_dir / NEXT_CA_CERT).unlink()
    return load_ca(pki_dir)


def finish_ca_rollover(pki_dir: Path) -> CA:
    """Step 3: trust only the signing CA again."""
    pki_dir = Path(pki_dir)
    if rollover_phase(pki_dir) != "promoted":
        raise PKIError(
            f"{pki_dir}: nothing to finish (phase {rollover_phase(pki_dir)}); a rollover "
            "is started, then promoted, then finished"
        )
    _write_trust(pki_dir, [load_ca(pki_dir).cert])
    return load_ca(pki_dir)


# -- leaf certificates -----------------------------------------------------------------


def _san_entries(hostnames: list[str], ips: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in dict.fromkeys(hostnames)]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
    return names


def _issue(
    ca: CA,
    common_name: str,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    days: int,
) -> tuple[x509.Certificate, PrivateKey]:
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(subject, ca.cert.subject, key, days, ca=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, hashes.SHA256()), key


def _still_good(
    ca: CA, cert_path: Path, key_path: Path, dns: set[str], ips: set[str], cn: str
) -> bool:
    """True when the existing pair is ours, unexpired, for ``cn`` and carries these SANs."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert, key = load_cert(cert_path), load_key(key_path)
    except (ValueError, PKIError):
        return False
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (
        key_matches(cert, key)
        and signed_by(cert, ca.cert)
        and expires_at(cert) - _now() > RENEW_BEFORE
        and bool(cns)
        and cns[0].value == cn
        and cert_sans(cert) == (dns, ips)
    )


def _issue_files(
    ca: CA,
    out_dir: Path,
    name: str,
    hostnames: list[str],
    ips: list[str],
    usages: list[x509.ObjectIdentifier],
    days: int,
    force: bool,
) -> IssuedCert:
    out_dir = Path(out_dir)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    ca_path = out_dir / CA_CERT
    dns = set(hostnames)
    ipset = {str(ipaddress.ip_address(i)) for i in ips}
    if force or not _still_good(ca, cert_path, key_path, dns, ipset, name):
        cert, key = _issue(ca, name, _san_entries(hostnames, ips), usages, days)
        write_atomic(key_path, _key_pem(key), KEY_MODE)
        write_atomic(cert_path, _cert_pem(cert), CERT_MODE)
    else:
        # Keeping a good pair still converges its modes (a hand `chmod 644` is undone).
        os.chmod(key_path, KEY_MODE)
        os.chmod(cert_path, CERT_MODE)
    if not ca_path.exists() or ca_path.read_bytes() != ca.trust_pem:
        write_atomic(ca_path, ca.trust_pem, CERT_MODE)
    else:
        os.chmod(ca_path, CERT_MODE)
    return IssuedCert(cert_path=cert_path, key_path=key_path, ca_path=ca_path)


def node_sans(node_id: str, hostnames: list[str], domain: str | None = None) -> list[str]:
    """DNS SANs for a node: its id, every hostname and, with a domain, their FQDNs."""
    names = [node_id, *hostnames]
    if domain:
        names += [f"{h}.{domain}" for h in names if "." not in h]
    return list(dict.fromkeys(names))


def issue_node(
    ca: CA,
    out_dir: Path,
    node_id: str,
    hostnames: list[str],
    ips: list[str],
    days: int = 365,
    force: bool = False,
) -> IssuedCert:
    """Issue ``<node_id>.crt``/``.key`` (+ ``ca.crt``) into ``out_dir``.

    The certificate serves and dials mutual TLS (EKU serverAuth + clientAuth); its SANs
    are exactly ``hostnames`` (pass FQDNs too; see :func:`node_sans`) and ``ips``
    (127.0.0.x lab addresses included). Kept when a valid one with the same SANs
    exists, reissued otherwise or when ``force`` (rotation).
    """
    return _issue_files(
        ca,
        out_dir,
        node_id,
        hostnames,
        ips,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days,
        force,
    )


def issue_client(
    ca: CA, out_dir: Path, name: str, days: int = 365, force: bool = False
) -> IssuedCert:
    """Issue an operator client certificate ``<name>.crt``/``.key`` (EKU clientAuth only)."""
    return _issue_files(ca, out_dir, name, [], [], [ExtendedKeyUsageOID.CLIENT_AUTH], days, force)
