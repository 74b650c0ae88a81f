"""TLS contexts built from a node's :class:`~plasmacloud.common.config.TLSConfig`.

Every server and client in PlasmaCloud gets its ``ssl.SSLContext`` (asyncio, aiohttp)
or gRPC credentials from here, so certificate handling is the same everywhere and a
missing or misnamed file fails with the path and the fix instead of a stack trace.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from plasmacloud.common.config import ConfigError, TLSConfig

if TYPE_CHECKING:
    from aiohttp import web


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"TLS {what} {path} does not exist; the file names must match cluster-config.json "
            "(issue them with `plasma pki issue`)"
        ) from exc
    except PermissionError as exc:
        raise ConfigError(f"TLS {what} {path} is not readable by this user") from exc


def server_context(tls: TLSConfig) -> ssl.SSLContext | None:
    """Server-side context; requires client certificates when ``client_cert_auth``."""
    if not tls.enabled:
        return None
    for path, what in ((tls.ca_file, "CA"), (tls.cert_file, "certificate"), (tls.key_file, "key")):
        _read(path, what)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    ctx.load_verify_locations(cafile=str(tls.ca_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_cert_auth else ssl.CERT_OPTIONAL
    return ctx


def client_context(tls: TLSConfig) -> ssl.SSLContext | None:
    """Client-side context presenting this node's certificate (for mTLS), trusting the CA
    and checking that the server's certificate names the host dialled."""
    if not tls.enabled:
        return None
    for path, what in ((tls.ca_file, "CA"), (tls.cert_file, "certificate"), (tls.key_file, "key")):
        _read(path, what)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(tls.ca_file))
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


def grpc_pem_material(tls: TLSConfig) -> tuple[bytes, bytes, bytes]:
    """(ca, cert, key) PEM bytes for ``grpc.ssl_server_credentials`` / channel credentials."""
    return (
        _read(tls.ca_file, "CA"),
        _read(tls.cert_file, "certificate"),
        _read(tls.key_file, "key"),
    )


def request_common_name(request: web.Request) -> str | None:
    """CN of the client certificate an aiohttp request's TLS handshake verified (None
    without one, or with an empty CN)."""
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)
    return None
