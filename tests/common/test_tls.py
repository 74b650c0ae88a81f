"""Node TLS contexts: mutual TLS within the CA, and the dialled name must be on the
server's certificate (Raft peers of both services are dialled this way)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from plasmacloud.common.config import TLSConfig
from plasmacloud.common.tls import client_context, server_context
from plasmacloud.provision import pki


def _tls(pki_dir: Path, name: str) -> TLSConfig:
    return TLSConfig(
        enabled=True,
        ca_file=pki_dir / "ca.crt",
        cert_file=pki_dir / f"{name}.crt",
        key_file=pki_dir / f"{name}.key",
    )


async def test_a_peer_is_accepted_only_under_a_name_its_certificate_carries(
    tmp_path: Path,
) -> None:
    ca = pki.init_ca(tmp_path)
    pki.issue_node(ca, tmp_path, "node01", ["node01"], ["127.0.0.1"])
    pki.issue_node(ca, tmp_path, "node02", ["node02"], ["127.0.0.2"])
    server_ctx = server_context(_tls(tmp_path, "node01"))
    client_ctx = client_context(_tls(tmp_path, "node02"))
    assert server_ctx is not None and client_ctx is not None

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        for name in ("node01", "127.0.0.1"):  # how a peer is dialled: hostname as SNI
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname=name
            )
            assert await reader.read() == b"ok"
            writer.close()
        # node01's certificate does not say node02: whoever answers there is refused
        with pytest.raises(ssl.SSLCertVerificationError, match="node02"):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="node02"
            )
    finally:
        server.close()
        await server.wait_closed()
