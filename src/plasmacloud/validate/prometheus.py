"""A real Prometheus (Debian's ``prometheus`` package) scraping every service's /metrics.

The validator starts it as its own child on a free loopback port with a generated
scrape config (JSON, which is YAML) and a throw-away TSDB directory, polls
``/api/v1/targets`` until every target is ``up`` (bounded), then stops it by its PID.
Targets that use TLS are scraped with the operator's certificate and the lab CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from plasmacloud.cluster.probe import ClusterView
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.validate.results import NodeResult

UP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
DOWN_GRACE_S = 5.0


def prometheus_binary() -> str | None:
    """Path of the ``prometheus`` server, or None when it is not installed."""
    return shutil.which("prometheus")


def _duration(seconds: float) -> str:
    """A Prometheus duration: whole numbers with a unit only ("4.5s" is refused)."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scrape_config(
    t: ClusterTarget, interval_s: float = 1.0, timeout_s: float = 1.0
) -> dict[str, Any]:
    """One job per service that exports metrics, one static target per node (label node);
    slow nodes (emulated VMs) need a longer ``timeout_s`` (at most ``interval_s``)."""
    jobs = []
    for svc in t.services:
        if svc.metrics_url is None:
            continue
        urls = {cfg.node_id: urlsplit(svc.metrics_url(cfg)) for cfg in t.configs}
        first = next(iter(urls.values()))
        job: dict[str, Any] = {
            "job_name": svc.name,
            "scheme": first.scheme,
            "metrics_path": first.path,
            "static_configs": [
                {"targets": [u.netloc], "labels": {"node": node}} for node, u in urls.items()
            ],
        }
        if first.scheme == "https":
            job["tls_config"] = {
                "ca_file": str(t.tls.ca_file),
                "cert_file": str(t.tls.cert_file),
                "key_file": str(t.tls.key_file),
            }
        jobs.append(job)
    return {
        "global": {
            "scrape_interval": _duration(interval_s),
            "scrape_timeout": _duration(timeout_s),
        },
        "scrape_configs": jobs,
    }


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running_prometheus(binary: str, config: dict[str, Any]) -> AsyncIterator[str]:
    """Run Prometheus with ``config``; yields its API base URL; stopped by PID on exit."""
    with tempfile.TemporaryDirectory(prefix="plasma-prometheus-") as tmp:
        conf = Path(tmp) / "prometheus.yml"
        conf.write_text(json.dumps(config, indent=2))
        port = _free_loopback_port()
        log = (Path(tmp) / "prometheus.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={conf}",
            f"--storage.tsdb.path={Path(tmp) / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()


async def _targets(base: str) -> list[dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(base + "/api/v1/targets", params={"state": "active"}) as r,
    ):
        doc = await r.json()
    return list(doc["data"]["activeTargets"])


async def wait_targets_up(
    base: str, expected: int, timeout: float, down_grace: float = DOWN_GRACE_S
) -> list[dict[str, Any]]:
    """Poll until ``expected`` active targets are all up, or until ``timeout``; the last list."""
    deadline = time.monotonic() + timeout
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            targets = await _targets(base)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError):
            targets = []  # not listening yet
        if len(targets) == expected and all(x.get("health") == "up" for x in targets):
            break
        if len(targets) == expected and all(x.get("health") != "unknown" for x in targets):
            # every target scraped at least once and some are down: give them a few more
            # scrapes, not the whole timeout (a stopped node will not come back by itself)
            deadline = min(deadline, time.monotonic() + down_grace)
        await asyncio.sleep(0.5)
    return targets


async def check_prometheus(
    t: ClusterTarget,
    view: ClusterView,
    timeout: float = UP_TIMEOUT_S,
    interval_s: float = 1.0,
    scrape_timeout_s: float = 1.0,
) -> list[NodeResult]:
    """A real Prometheus scrapes every service of every node; each target must be up
    (a target that failed a scrape gets at least three more before it counts as down)."""
    binary = prometheus_binary()
    if binary is None:
        why = "prometheus is not installed (apt-get install prometheus)"
        return [NodeResult(c.node_id, False, why) for c in t.configs]
    config = scrape_config(t, interval_s, scrape_timeout_s)
    expected = sum(len(j["static_configs"]) for j in config["scrape_configs"])
    async with running_prometheus(binary, config) as base:
        targets = await wait_targets_up(base, expected, timeout, max(DOWN_GRACE_S, 3 * interval_s))
    out = []
    for cfg in t.configs:
        mine = [x for x in targets if x.get("labels", {}).get("node") == cfg.node_id]
        seen = [
            f"{x['labels'].get('job')} {x.get('health')}"
            + (f" ({x['lastError']})" if x.get("lastError") else "")
            for x in sorted(mine, key=lambda x: str(x["labels"].get("job")))
        ]
        all_up = all(x.get("health") == "up" for x in mine)
        ok = all_up and len(mine) == len(config["scrape_configs"])
        out.append(NodeResult(cfg.node_id, ok, ", ".join(seen) or "no target reported"))
    return out
