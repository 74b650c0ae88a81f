"""Persistence across a full restart: markers written through every node (a Chainfire key
and, when FlareDB runs, a FlareDB row each), every node's services stopped and started
again, then every marker read back linearizably on every node, then removed.

The restart itself is the caller's (:attr:`ClusterTarget.restart`: the lab stops and starts
each node through its backend and waits until the cluster is ready), so this module
works for any backend.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import grpc

from plasmacloud.cluster.probe import ClusterView
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.flaredb.client import Error as FlareError
from plasmacloud.validate import chainfire_checks, flaredb_checks
from plasmacloud.validate.results import NodeResult

MARKER_PREFIX = "/plasmacloud/validate/persist"


async def _write_markers(t: ClusterTarget, tag: str) -> dict[str, str]:
    """One marker per node, written through that node; marker name -> value."""
    markers = {}
    for cfg in t.configs:
        name = f"{cfg.node_id}-{tag}"
        value = secrets.token_hex(8)
        await chainfire_checks.put(cfg, t.tls, f"{MARKER_PREFIX}/{name}".encode(), value.encode())
        if t.runs("flaredb"):
            await asyncio.to_thread(flaredb_checks.write_row, cfg, t.tls, f"persist-{name}", value)
        markers[name] = value
    return markers


async def _read_back(t: ClusterTarget, markers: dict[str, str]) -> list[NodeResult]:
    out = []
    for cfg in t.configs:
        kv_ok = rows_ok = 0
        errors = []
        for name, value in markers.items():
            try:
                got = await chainfire_checks.get(cfg, t.tls, f"{MARKER_PREFIX}/{name}".encode())
                kv_ok += got == value.encode()
                if t.runs("flaredb"):
                    row = await asyncio.to_thread(
                        flaredb_checks.read_row, cfg, t.tls, f"persist-{name}"
                    )
                    rows_ok += row == value
            except (grpc.aio.AioRpcError, FlareError) as exc:
                errors.append(f"{name}: {exc}")
        n = len(markers)
        want_rows = n if t.runs("flaredb") else 0
        evidence = f"{kv_ok}/{n} Chainfire keys"
        if t.runs("flaredb"):
            evidence += f", {rows_ok}/{n} FlareDB rows"
        evidence += " back" + (f"; errors: {'; '.join(errors)}" if errors else "")
        ok = kv_ok == n and rows_ok == want_rows and not errors
        out.append(NodeResult(cfg.node_id, ok, evidence))
    return out


async def _remove(t: ClusterTarget, markers: dict[str, str]) -> None:
    cfg = t.configs[0]
    for name in markers:
        await chainfire_checks.delete(cfg, t.tls, f"{MARKER_PREFIX}/{name}".encode())
    if t.runs("flaredb"):
        ids = [f"persist-{name}" for name in markers]
        await asyncio.to_thread(flaredb_checks.delete_rows, cfg, t.tls, ids)


async def check_persistence(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """Write markers, restart every node, read every marker back on every node."""
    if t.restart is None:
        raise ValueError("the persistence check needs a ClusterTarget with restart")
    try:
        markers = await _write_markers(t, secrets.token_hex(4))
    except (grpc.aio.AioRpcError, FlareError) as exc:
        return [NodeResult(c.node_id, False, f"writing markers: {exc}") for c in t.configs]
    started = time.monotonic()
    try:
        await t.restart()
    except Exception as exc:  # the backend's errors have no common base: report any
        return [NodeResult(c.node_id, False, f"restart failed: {exc}") for c in t.configs]
    took = time.monotonic() - started
    results = await _read_back(t, markers)
    try:
        await _remove(t, markers)
    except (grpc.aio.AioRpcError, FlareError) as exc:
        return [NodeResult(r.node_id, False, f"{r.evidence}; cleanup: {exc}") for r in results]
    return [NodeResult(r.node_id, r.ok, f"restart {took:.1f}s; {r.evidence}") for r in results]
