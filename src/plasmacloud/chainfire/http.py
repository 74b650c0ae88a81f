"""HTTP on the metrics port: etcd's ``/health`` and Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.node import ChainfireNode

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 1.0  # etcd gives its health read one second too


async def check_health(node: ChainfireNode) -> tuple[bool, str]:
    """etcd 3.4's checkHealth: no alarm, a known leader, and a linearizable read answers."""
    alarms = node.store.alarms()
    if alarms:
        return False, f"alarm {alarms[0].alarm} raised by member {alarms[0].memberID:x}"
    if node.raft.leader_id is None:
        return False, "no leader"
    try:
        await asyncio.wait_for(node.barrier(), HEALTH_TIMEOUT)
    except (TimeoutError, errors.EtcdError) as exc:
        return False, f"linearizable read failed: {exc}"
    return True, ""


def make_app(node: ChainfireNode) -> web.Application:
    """The aiohttp application serving /health and /metrics for one member."""

    async def health(request: web.Request) -> web.Response:
        ok, reason = await check_health(node)
        if not ok:
            log.warning("/health false: %s", reason)
        body = json.dumps({"health": "true" if ok else "false"}, separators=(",", ":"))
        return web.Response(text=body, status=200 if ok else 503, content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(node.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


async def start_http(node: ChainfireNode, host: str, port: int) -> web.AppRunner:
    """Serve the metrics app on host:port over plain HTTP, like etcd's metrics URL.

    Returns the runner (call ``cleanup()`` to stop).
    """
    runner = web.AppRunner(make_app(node), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
