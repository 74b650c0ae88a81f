"""TLS contexts built from a node's :class:`~plasmacloud.common.config.TLSConfig`.

Every server and client in PlasmaCloud gets its ``ssl.SSLContext`` (asyncio, aiohttp)
or gRPC credentials from here, so certificate handling is the same everywhere and a
missing or misnamed file fails with the path and the fix instead of a stack trace.

Certificates are rotated without a restart: every context made here is remembered
(weakly) with the files it was loaded from, and :func:`reload_certificates` (run by
:func:`watch_certificates` every few seconds and on SIGHUP) picks changed files up, so
the next handshake presents the new certificate and trusts exactly the new CA file (a
CA rollover puts both CAs in that file for the overlap, then drops the old one). A
server context gets a fresh context built from the new files, which its handshakes
switch to (OpenSSL's servername callback runs on every handshake, SNI or not): loading a
CA file into a context only ever adds to what it trusts, so a dropped CA would stay
trusted by servers until a restart. A client context takes the new files in place
(it may trust a dropped CA until restart; the servers it talks to no longer present
certificates of it). gRPC servers read the files again on a handshake after they
changed (:func:`grpc_server_credentials`).
A new pair that does not load (a key written after its certificate) is skipped until it
does, so a rotation in progress never breaks the working one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from plasmacloud.common.config import ConfigError, TLSConfig

if TYPE_CHECKING:
    import grpc
    from aiohttp import web

log = logging.getLogger(__name__)

# seconds between checks of the certificate files (SIGHUP checks at once)
RELOAD_INTERVAL_S = 5.0

_Stamp = tuple[tuple[int, int], ...]
# every context made here -> (its files, their stamp when last loaded)
_contexts: weakref.WeakKeyDictionary[ssl.SSLContext, tuple[TLSConfig, _Stamp]] = (
    weakref.WeakKeyDictionary()
)
# a server context -> the context built from its files' latest usable version
_latest: weakref.WeakKeyDictionary[ssl.SSLContext, ssl.SSLContext] = weakref.WeakKeyDictionary()


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
    ctx = _new_server_context(tls)
    ctx.sni_callback = _switch_to_latest
    _contexts[ctx] = (tls, _stamp(tls))
    return ctx


def _new_server_context(tls: TLSConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    ctx.load_verify_locations(cafile=str(tls.ca_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_cert_auth else ssl.CERT_OPTIONAL
    return ctx


def _switch_to_latest(conn: ssl.SSLObject, _name: str | None, ctx: ssl.SSLContext) -> None:
    # called early in every handshake on the context a server was made with: this
    # connection then uses the certificate and exactly the CAs of the latest files
    latest = _latest.get(ctx)
    if latest is not None:
        conn.context = latest


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
    _contexts[ctx] = (tls, _stamp(tls))
    return ctx


def grpc_pem_material(tls: TLSConfig) -> tuple[bytes, bytes, bytes]:
    """(ca, cert, key) PEM bytes for ``grpc.ssl_server_credentials`` / channel credentials."""
    return (
        _read(tls.ca_file, "CA"),
        _read(tls.cert_file, "certificate"),
        _read(tls.key_file, "key"),
    )


def _stamp(tls: TLSConfig) -> _Stamp:
    """What changes when any of the three files is rewritten (inode, size, mtime)."""
    out = []
    for path in (tls.ca_file, tls.cert_file, tls.key_file):
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, 0))
            continue
        out.append((st.st_ino ^ st.st_size, st.st_mtime_ns))
    return tuple(out)


def _loads(tls: TLSConfig) -> bool:
    """Whether the files form a usable set now (the key matches the certificate)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            str(tls.cert_file), str(tls.key_file)
        )
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        log.warning("new TLS files of %s not loaded yet: %s", tls.cert_file, exc)
        return False
    return True


def reload_certificates() -> int:
    """Load changed certificate, key and CA files into the contexts made from them;
    returns how many contexts took new files."""
    reloaded = 0
    # a service's contexts share their files: check each changed set once
    usable: dict[tuple[TLSConfig, _Stamp], bool] = {}
    for ctx, (tls, stamp) in list(_contexts.items()):
        now = _stamp(tls)
        if now == stamp:
            continue
        if (tls, now) not in usable:
            usable[tls, now] = _loads(tls)
        if not usable[tls, now]:
            continue
        if ctx.sni_callback is _switch_to_latest:
            _latest[ctx] = _new_server_context(tls)
        else:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        _contexts[ctx] = (tls, now)
        reloaded += 1
    if reloaded:
        log.info("reloaded TLS certificates into %d contexts", reloaded)
    return reloaded


async def watch_certificates(interval: float = RELOAD_INTERVAL_S) -> None:
    """Reload changed certificates every ``interval`` seconds and on SIGHUP, until
    cancelled (a service runs it for its life)."""
    loop = asyncio.get_running_loop()
    # not in the main thread (a test running a server in-process) there is no SIGHUP
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, reload_certificates)
    try:
        while True:
            await asyncio.sleep(interval)
            reload_certificates()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)


def grpc_server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """mTLS server credentials that pick up rotated files at the next handshake."""
    import grpc

    def configuration() -> grpc.ServerCertificateConfiguration:
        ca, cert, key = grpc_pem_material(tls)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    loaded = [_stamp(tls)]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # called by gRPC on every handshake: a stat of three files, no reading
        now = _stamp(tls)
        if now == loaded[0] or not _loads(tls):
            return None
        loaded[0] = now
        log.info("gRPC server reloaded TLS certificates from %s", tls.cert_file)
        return configuration()

    return grpc.dynamic_ssl_server_credentials(
        configuration(), fetch, require_client_authentication=tls.client_cert_auth
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
