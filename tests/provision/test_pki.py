"""PKI: CA creation, node/client issuance, idempotence, modes and real mTLS handshakes."""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from plasmacloud.common.config import TLSConfig
from plasmacloud.common.tls import client_context, server_context
from plasmacloud.provision import pki


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.CA:
    return pki.init_ca(tmp_path_factory.mktemp("pki"))


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_init_ca_writes_files_with_modes_and_is_idempotent(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "pki")
    assert ca.cert_path == tmp_path / "pki" / "ca.crt"
    assert ca.key_path == tmp_path / "pki" / "ca.key"
    assert _mode(ca.cert_path) == 0o644
    assert _mode(ca.key_path) == 0o400
    bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True
    again = pki.init_ca(tmp_path / "pki")
    assert again.cert == ca.cert
    assert pki.load_ca(tmp_path / "pki").cert == ca.cert


def test_load_ca_missing_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(pki.PKIError, match="plasma pki init"):
        pki.load_ca(tmp_path)


def test_load_ca_mismatched_pair_is_refused(tmp_path: Path) -> None:
    a = pki.init_ca(tmp_path / "a")
    pki.init_ca(tmp_path / "b")
    (tmp_path / "a" / "ca.key").chmod(0o600)
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(pki.PKIError, match="not the key"):
        pki.load_ca(a.cert_path.parent)


def test_issue_node_names_modes_sans_and_eku(ca: pki.CA, tmp_path: Path) -> None:
    issued = pki.issue_node(
        ca, tmp_path, "node01", ["node01", "node01.lab.local"], ["192.168.100.11", "127.0.0.11"]
    )
    assert issued.cert_path == tmp_path / "node01.crt"
    assert issued.key_path == tmp_path / "node01.key"
    assert issued.ca_path == tmp_path / "ca.crt"
    assert _mode(issued.cert_path) == 0o644
    assert _mode(issued.key_path) == 0o400
    assert _mode(issued.ca_path) == 0o644
    assert issued.ca_path.read_bytes() == ca.cert_path.read_bytes()
    cert = pki.load_cert(issued.cert_path)
    assert pki.cert_sans(cert) == (
        {"node01", "node01.lab.local"},
        {"192.168.100.11", "127.0.0.11"},
    )
    assert _eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert pki.signed_by(cert, ca.cert)
    assert pki.key_matches(cert, pki.load_key(issued.key_path))


def test_issue_node_keeps_valid_cert_and_reissues_on_san_change(ca: pki.CA, tmp_path: Path) -> None:
    pki.issue_node(ca, tmp_path, "node02", ["node02"], ["192.168.100.12"])
    first = (tmp_path / "node02.crt").read_bytes()
    pki.issue_node(ca, tmp_path, "node02", ["node02"], ["192.168.100.12"])
    assert (tmp_path / "node02.crt").read_bytes() == first
    pki.issue_node(ca, tmp_path, "node02", ["node02"], ["192.168.100.22"])
    changed = pki.load_cert(tmp_path / "node02.crt")
    assert pki.cert_sans(changed)[1] == {"192.168.100.22"}
    pki.issue_node(ca, tmp_path, "node02", ["node02"], ["192.168.100.22"], force=True)
    assert pki.load_cert(tmp_path / "node02.crt").serial_number != changed.serial_number


def test_issue_node_reissues_cert_from_another_ca(ca: pki.CA, tmp_path: Path) -> None:
    other = pki.init_ca(tmp_path / "other")
    pki.issue_node(other, tmp_path / "out", "node03", ["node03"], ["127.0.0.13"])
    pki.issue_node(ca, tmp_path / "out", "node03", ["node03"], ["127.0.0.13"])
    cert = pki.load_cert(tmp_path / "out" / "node03.crt")
    assert pki.signed_by(cert, ca.cert)
    assert (tmp_path / "out" / "ca.crt").read_bytes() == ca.cert_path.read_bytes()


def test_issue_client_is_client_auth_only(ca: pki.CA, tmp_path: Path) -> None:
    issued = pki.issue_client(ca, tmp_path, "admin")
    cert = pki.load_cert(issued.cert_path)
    assert _eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert _mode(issued.key_path) == 0o400


def test_node_sans_adds_fqdns() -> None:
    assert pki.node_sans("node01", ["node01"], "lab.local") == ["node01", "node01.lab.local"]
    assert pki.node_sans("node01", ["n1"], None) == ["node01", "n1"]


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, sni: str) -> bytes:
    """Serve one echo over TLS on 127.0.0.1 and return what the client read back."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else "none"
        writer.write(cn.encode())
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=sni), 10
        )
        data = await asyncio.wait_for(reader.read(100), 10)
        writer.close()
        return data
    finally:
        srv.close()
        await srv.wait_closed()


def _tls(d: Path, node: str) -> TLSConfig:
    return TLSConfig(ca_file=d / "ca.crt", cert_file=d / f"{node}.crt", key_file=d / f"{node}.key")


async def test_mtls_handshake_between_two_nodes(ca: pki.CA, tmp_path: Path) -> None:
    pki.issue_node(ca, tmp_path / "n1", "node01", ["node01"], ["127.0.0.1"])
    pki.issue_node(ca, tmp_path / "n2", "node02", ["node02"], ["127.0.0.1"])
    server = server_context(_tls(tmp_path / "n1", "node01"))
    client = client_context(_tls(tmp_path / "n2", "node02"))
    assert server and client
    # The server saw node02's client certificate: mutual TLS really happened.
    assert await _handshake(server, client, "node01") == b"node02"


async def test_handshake_fails_on_wrong_hostname_and_foreign_ca(ca: pki.CA, tmp_path: Path) -> None:
    pki.issue_node(ca, tmp_path / "n1", "node01", ["node01"], ["127.0.0.1"])
    pki.issue_node(ca, tmp_path / "n2", "node02", ["node02"], ["127.0.0.1"])
    server = server_context(_tls(tmp_path / "n1", "node01"))
    client = client_context(_tls(tmp_path / "n2", "node02"))
    assert server and client
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server, client, "node09")
    foreign = pki.init_ca(tmp_path / "foreign")
    pki.issue_node(foreign, tmp_path / "f", "node02", ["node02"], ["127.0.0.1"])
    rogue = client_context(_tls(tmp_path / "f", "node02"))
    assert rogue
    try:
        data = await _handshake(server, rogue, "node01")
    except (ssl.SSLError, ConnectionError):
        data = b""
    # TLS 1.3 may report the rejected client certificate only as a closed stream.
    assert data == b""


async def test_ca_rollover_keeps_old_and_new_talking_at_every_step(tmp_path: Path) -> None:
    """A node whose files lag one step behind (not yet shipped) still shakes hands with one
    that has them, at each step; after finish, a certificate of the old CA is refused."""
    root = tmp_path / "pki"
    pki.init_ca(root, "old CA")

    def files(node: str) -> Path:  # issue (or keep) a node's files from the pki dir now
        out = tmp_path / node
        pki.issue_node(pki.load_ca(root), out, node, [node], ["127.0.0.1"])
        return out

    def ctxs(d: Path, node: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        server, client = server_context(_tls(d, node)), client_context(_tls(d, node))
        assert server is not None and client is not None
        return server, client

    before = ctxs(files("node01"), "node01")  # node01 keeps its files from before the start
    assert pki.rollover_phase(root) == "none"
    with pytest.raises(pki.PKIError, match="nothing to finish"):
        pki.finish_ca_rollover(root)

    pki.start_ca_rollover(root, "new CA")
    assert pki.rollover_phase(root) == "started"
    with pytest.raises(pki.PKIError, match="already under way"):
        pki.start_ca_rollover(root, "newer CA")
    started = ctxs(files("node02"), "node02")  # old certificate, both CAs trusted
    assert [c.subject.rfc4514_string() for c in pki.load_ca(root).trusted()] == [
        "CN=old CA",
        "CN=new CA",
    ]
    assert await _handshake(before[0], started[1], "node01") == b"node02"
    assert await _handshake(started[0], before[1], "node02") == b"node01"

    pki.promote_next_ca(root)
    assert pki.rollover_phase(root) == "promoted"
    assert not (root / pki.NEXT_CA_KEY).exists()
    promoted_dir = tmp_path / "node03"
    pki.issue_node(pki.load_ca(root), promoted_dir, "node03", ["node03"], ["127.0.0.1"])
    issuer = pki.load_cert(promoted_dir / "node03.crt").issuer.rfc4514_string()
    assert issuer == "CN=new CA"
    promoted = ctxs(promoted_dir, "node03")
    # a node that got the start step's files and one reissued by the new CA
    assert await _handshake(started[0], promoted[1], "node02") == b"node03"
    assert await _handshake(promoted[0], started[1], "node03") == b"node02"

    pki.finish_ca_rollover(root)
    assert pki.rollover_phase(root) == "none"
    finished_dir = tmp_path / "node04"
    pki.issue_node(pki.load_ca(root), finished_dir, "node04", ["node04"], ["127.0.0.1"])
    finished = ctxs(finished_dir, "node04")
    assert await _handshake(promoted[0], finished[1], "node03") == b"node04"
    # node02 still holds the old CA's certificate: trusted by nobody any more
    try:
        data = await _handshake(finished[0], started[1], "node04")
    except (ssl.SSLError, ConnectionError):
        data = b""
    # TLS 1.3 may report the rejected client certificate only as a closed stream.
    assert data == b""
