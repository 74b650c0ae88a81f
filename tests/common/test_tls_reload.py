"""Certificates rotate without a restart: contexts and gRPC servers made by common.tls
present the new certificate at the next handshake, and a half-written pair is not
loaded until it is whole."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from plasmacloud.common.config import TLSConfig
from plasmacloud.common.tls import (
    client_context,
    grpc_server_credentials,
    reload_certificates,
    server_context,
)
from plasmacloud.provision import pki

HOST = "127.0.0.1"


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[TLSConfig]:
    ca = pki.init_ca(tmp_path / "ca")
    issued = pki.issue_node(ca, tmp_path / "node", "node01", ["localhost"], [HOST])
    yield TLSConfig(ca_file=issued.ca_path, cert_file=issued.cert_path, key_file=issued.key_path)


def rotate(tls: TLSConfig, tmp_path: Path) -> int:
    """Reissue node01's certificate in place; its serial number."""
    ca = pki.load_ca(tmp_path / "ca")
    pki.issue_node(ca, tls.cert_file.parent, "node01", ["localhost"], [HOST], force=True)
    return serial(tls.cert_file.read_bytes())


def serial(pem_or_der: bytes) -> int:
    if pem_or_der.startswith(b"-----"):
        return int(x509.load_pem_x509_certificate(pem_or_der).serial_number)
    return int(x509.load_der_x509_certificate(pem_or_der).serial_number)


def presented(port: int, tls: TLSConfig) -> int:
    """Serial of the certificate the server at ``port`` presents to a new handshake (made
    with an operator's certificate issued beside the node's)."""
    ca = pki.load_ca(tls.ca_file.parent.parent / "ca")
    op = pki.issue_client(ca, tls.ca_file.parent.parent / "operator", "operator")
    ctx = client_context(
        TLSConfig(ca_file=op.ca_path, cert_file=op.cert_path, key_file=op.key_path)
    )
    assert ctx is not None
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((HOST, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return serial(der)


async def test_a_server_context_presents_the_rotated_certificate(
    tls: TLSConfig, tmp_path: Path
) -> None:
    ctx = server_context(tls)
    server = await asyncio.start_server(lambda r, w: w.close(), HOST, 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        first = serial(tls.cert_file.read_bytes())
        assert await asyncio.to_thread(presented, port, tls) == first
        second = rotate(tls, tmp_path)
        assert second != first
        assert reload_certificates() >= 1
        assert await asyncio.to_thread(presented, port, tls) == second
        assert reload_certificates() == 0  # nothing changed since
    finally:
        server.close()
        await server.wait_closed()


async def test_a_half_written_pair_is_not_loaded(tls: TLSConfig, tmp_path: Path) -> None:
    ctx = server_context(tls)
    server = await asyncio.start_server(lambda r, w: w.close(), HOST, 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        first = serial(tls.cert_file.read_bytes())
        old_key = tls.key_file.read_bytes()
        second = rotate(tls, tmp_path)
        new_key = tls.key_file.read_bytes()
        tls.key_file.chmod(0o600)
        tls.key_file.write_bytes(old_key)  # the new certificate, still the old key
        reload_certificates()
        assert await asyncio.to_thread(presented, port, tls) == first
        tls.key_file.write_bytes(new_key)
        assert reload_certificates() >= 1
        assert await asyncio.to_thread(presented, port, tls) == second
    finally:
        server.close()
        await server.wait_closed()


async def test_a_grpc_server_presents_the_rotated_certificate(
    tls: TLSConfig, tmp_path: Path
) -> None:
    server = grpc.aio.server()
    port = server.add_secure_port(f"{HOST}:0", grpc_server_credentials(tls))
    await server.start()
    try:
        first = serial(tls.cert_file.read_bytes())
        assert await asyncio.to_thread(presented, port, tls) == first
        second = rotate(tls, tmp_path)
        # no reload call: gRPC asks at the next handshake
        assert await asyncio.to_thread(presented, port, tls) == second
    finally:
        await server.stop(None)


async def test_a_server_stops_trusting_a_ca_dropped_from_its_ca_file(
    tls: TLSConfig, tmp_path: Path
) -> None:
    """Loading a CA file into a context only adds to its trust: the server's handshakes
    must move to a context of the new files for a dropped CA to be refused."""
    other = pki.init_ca(tmp_path / "other", "other CA")
    guest = pki.issue_client(other, tmp_path / "guest", "guest")
    ours = tls.ca_file.read_bytes()
    tls.ca_file.chmod(0o644)
    tls.ca_file.write_bytes(ours + other.trust_pem)  # both trusted, as during a rollover
    ctx = server_context(tls)
    answer = b"hello"

    async def greet(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(answer)
        await w.drain()
        w.close()

    server = await asyncio.start_server(greet, HOST, 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    guest_tls = TLSConfig(ca_file=tls.ca_file, cert_file=guest.cert_path, key_file=guest.key_path)

    def read_as_guest() -> bytes:
        client = client_context(guest_tls)
        assert client is not None
        try:
            with (
                socket.create_connection((HOST, port), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname=HOST) as conn,
            ):
                return conn.recv(len(answer))
        except (OSError, ConnectionError):
            return b""  # refused in the handshake, or (TLS 1.3) on the first read

    try:
        assert await asyncio.to_thread(read_as_guest) == answer
        tls.ca_file.write_bytes(ours)  # the other CA dropped
        assert reload_certificates() >= 1
        assert await asyncio.to_thread(read_as_guest) == b""
        assert await asyncio.to_thread(presented, port, tls) == serial(tls.cert_file.read_bytes())
    finally:
        server.close()
        await server.wait_closed()
