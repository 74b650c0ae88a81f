"""Certificate rotation on a live lab, while a client writes: every node's certificate is
reissued in place, every service (Chainfire's client and peer ports, FlareDB's HTTP and
Raft ports) presents the new one within seconds, no process restarts and no write
fails."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from plasmacloud.chainfire.client import ChainfireClient
from plasmacloud.common.config import NodeConfig
from plasmacloud.common.tls import RELOAD_INTERVAL_S, client_context
from plasmacloud.lab.control import Lab
from plasmacloud.lab.pki import ensure_lab_pki
from plasmacloud.lab.services import CHAINFIRE, FLAREDB
from plasmacloud.provision import pki

from .chaos_clients import ChaosClients
from .conftest import running_lab

pytestmark = pytest.mark.slow

WRITES_FOR_S = 3 * RELOAD_INTERVAL_S  # bounded: the writer stops after this


@pytest.fixture(params=["process", "netns"])
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A Chainfire + FlareDB lab on each backend the runbook's rotation is rehearsed on."""
    with running_lab(tmp_path / "lab", (CHAINFIRE, FLAREDB), backend=request.param) as lab:
        yield lab


def ports(cfg: NodeConfig) -> list[int]:
    p = cfg.ports
    return [p.chainfire_client, p.chainfire_peer, p.flaredb_http, p.flaredb_raft]


def presented(host: str, port: int, ctx: ssl.SSLContext) -> x509.Certificate:
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def presented_serial(host: str, port: int, ctx: ssl.SSLContext) -> int:
    return int(presented(host, port, ctx).serial_number)


def pids(lab: Lab) -> dict[tuple[str, str], int | None]:
    return {
        (s.service, node): s.pid
        for node in lab.spec.node_ids
        for s in lab.backend.node_status(node).services
    }


async def write_while(
    stop: asyncio.Event, lab: Lab, bound: float = WRITES_FOR_S
) -> tuple[int, list[str]]:
    """Put keys until ``stop`` (or the time bound); (acknowledged, errors)."""
    endpoints = [f"{c.listen_host}:{c.ports.chainfire_client}" for c in lab.configs()]
    client = ChainfireClient(endpoints, lab.operator_tls, timeout=5)
    done, errors = 0, []
    deadline = time.monotonic() + bound
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                await client.put(f"rot/{done}", b"v")
                done += 1
            except Exception as exc:  # any failed write is the finding
                errors.append(repr(exc))
            await asyncio.sleep(0.01)
    finally:
        await client.close()
    return done, errors


async def test_rotated_certificates_are_served_without_restart_or_failed_writes(
    lab: Lab,
) -> None:
    """The chaos run's clients write to every node throughout: no request fails and the
    history is linearizable."""
    ctx = client_context(lab.operator_tls)
    assert ctx is not None
    configs = lab.configs()
    before = pids(lab)
    assert before and all(before.values())
    old = {cfg.node_id: pki.load_cert(cfg.tls.cert_file).serial_number for cfg in configs}

    chaos = await ChaosClients.open(lab, "chaos_rotate")
    writing = asyncio.gather(*chaos.workers(WRITES_FOR_S))
    try:
        await asyncio.sleep(0.5)
        ca = pki.load_ca(lab.layout.pki_dir)
        for cfg in configs:  # what `plasma pki rotate` does to the files
            pki.issue_node(
                ca, cfg.tls.cert_file.parent, cfg.node_id, [cfg.node_id], [str(cfg.ip)], force=True
            )
        new = {cfg.node_id: pki.load_cert(cfg.tls.cert_file).serial_number for cfg in configs}
        assert all(new[n] != old[n] for n in new)

        started = time.monotonic()
        pending = {(cfg.node_id, port) for cfg in configs for port in ports(cfg)}
        while pending and time.monotonic() - started < 3 * RELOAD_INTERVAL_S:
            for cfg in configs:
                for port in ports(cfg):
                    if (cfg.node_id, port) in pending:
                        got = await asyncio.to_thread(presented_serial, cfg.listen_host, port, ctx)
                        if got == new[cfg.node_id]:
                            pending.discard((cfg.node_id, port))
            await asyncio.sleep(0.2)
        took = time.monotonic() - started
        await writing
        await chaos.final_reads(configs[0].node_id)
    finally:
        await chaos.close()
    acknowledged = chaos.acknowledged()
    print(f"all ports serve the new certificates after {took:.1f}s; {len(acknowledged)} writes")
    assert not pending, f"still the old certificate on {sorted(pending)}"
    assert [op for op in chaos.rec.ops if op.outcome != "ok"] == [] and acknowledged
    chaos.check("certificate rotation")
    assert pids(lab) == before  # nothing restarted


async def test_a_ca_rollover_under_writes_needs_no_restart_and_loses_no_write(
    lab: Lab, tmp_path: Path
) -> None:
    """The three steps of `plasma pki ca-rollover` applied to a live lab's files: every port
    ends up presenting a certificate of the new CA, a client certificate of the old CA is
    refused, no process restarted and no write failed."""
    configs = lab.configs()
    before = pids(lab)
    old_client = tmp_path / "old-client"  # the operator's files from before the rollover
    shutil.copytree(lab.layout.pki_dir, old_client)
    stop = asyncio.Event()
    writer = asyncio.create_task(write_while(stop, lab, bound=12 * RELOAD_INTERVAL_S))
    started = time.monotonic()
    pki.start_ca_rollover(lab.layout.pki_dir, "next CA")
    ensure_lab_pki(lab.layout, lab.spec)
    await asyncio.sleep(2 * RELOAD_INTERVAL_S)  # every service trusts both CAs
    pki.promote_next_ca(lab.layout.pki_dir)
    ensure_lab_pki(lab.layout, lab.spec, force=True)  # every certificate by the next CA
    pending = {(cfg.node_id, port) for cfg in configs for port in ports(cfg)}
    while pending and time.monotonic() - started < 8 * RELOAD_INTERVAL_S:
        ctx = client_context(lab.operator_tls)
        assert ctx is not None
        for node, port in sorted(pending):
            cert = await asyncio.to_thread(presented, lab.spec.ip_of(node).exploded, port, ctx)
            if cert.issuer.rfc4514_string() == "CN=next CA":
                pending.discard((node, port))
        await asyncio.sleep(0.2)
    assert not pending, f"still a certificate of the old CA on {sorted(pending)}"
    pki.finish_ca_rollover(lab.layout.pki_dir)
    ensure_lab_pki(lab.layout, lab.spec)
    await asyncio.sleep(2 * RELOAD_INTERVAL_S)  # every service trusts the next CA alone
    took = time.monotonic() - started
    stop.set()
    acknowledged, errors = await writer
    print(f"rollover applied on every port in {took:.1f}s; {acknowledged} puts meanwhile")
    assert errors == [] and acknowledged > 0
    assert pids(lab) == before  # nothing restarted
    # the operator's old certificate, presented to a server it trusts: refused now
    old_tls = lab.operator_tls.model_copy(
        update={
            f: old_client / getattr(lab.operator_tls, f).name for f in ("cert_file", "key_file")
        }
    )
    old_ctx = client_context(old_tls)
    assert old_ctx is not None
    cfg = configs[0]
    assert [p for p in ports(cfg) if not refused(cfg.listen_host, p, old_ctx)] == []


def refused(host: str, port: int, ctx: ssl.SSLContext) -> bool:
    """Whether the server refuses this client's certificate: the handshake fails or (TLS
    1.3, where the server judges the client's certificate after its own part) the first
    read does or finds the connection closed; an accepted client gets data (gRPC's
    settings) or, from a server waiting for a request, a timeout."""
    try:
        with (
            socket.create_connection((host, port), timeout=3) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as conn,
        ):
            return conn.recv(1) == b""
    except (ssl.SSLError, ConnectionError):
        return True
    except TimeoutError:
        return False
