"""The services a lab node runs: one entry per service, in start order.

Adding a service to the lab (FlareDB, IAM) means appending a :class:`ServiceSpec` to
:data:`SERVICES`: how to start it from the node's ``cluster-config.json`` and where it
says it is healthy. Everything else (start, stop, logs, health waits) is generic.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plasmacloud.common.config import NodeConfig


@dataclass(frozen=True)
class ServiceSpec:
    """How one service of a node is started and probed."""

    name: str
    # (path of cluster-config.json, the config) -> argv of the long-running process
    argv: Callable[[Path, NodeConfig], list[str]]
    # the config -> URL answering 200 (and ``{"health": "true"}`` if JSON) when healthy
    health_url: Callable[[NodeConfig], str]
    # the config -> Prometheus scrape URL, if the service exports metrics
    metrics_url: Callable[[NodeConfig], str] | None = None


def plasma_executable() -> str:
    """The ``plasma`` console script of this Python (so a venv's lab runs that venv)."""
    beside = Path(sys.executable).parent / "plasma"
    if beside.exists():
        return str(beside)
    found = shutil.which("plasma")
    if found is None:
        raise FileNotFoundError("the `plasma` command is not installed (pip install -e .)")
    return found


def plasma_serve(service: str) -> Callable[[Path, NodeConfig], list[str]]:
    """argv builder for ``plasma <service> serve --config PATH``."""

    def argv(config_path: Path, _cfg: NodeConfig) -> list[str]:
        return [plasma_executable(), service, "serve", "--config", str(config_path)]

    return argv


CHAINFIRE = ServiceSpec(
    name="chainfire",
    argv=plasma_serve("chainfire"),
    health_url=lambda c: f"http://{c.listen_host}:{c.ports.chainfire_metrics}/health",
    metrics_url=lambda c: f"http://{c.listen_host}:{c.ports.chainfire_metrics}/metrics",
)


def flaredb_url(c: NodeConfig) -> str:
    """FlareDB's HTTP API of one node (https with client certificates when TLS is on)."""
    return f"{'https' if c.tls.enabled else 'http'}://{c.listen_host}:{c.ports.flaredb_http}"


FLAREDB = ServiceSpec(
    name="flaredb",
    argv=plasma_serve("flaredb"),
    # /readyz answers 200 once the node serves and knows a Raft leader.
    health_url=lambda c: flaredb_url(c) + "/readyz",
    metrics_url=lambda c: flaredb_url(c) + "/metrics",
)

SERVICES: tuple[ServiceSpec, ...] = (CHAINFIRE, FLAREDB)


def service_named(name: str, services: tuple[ServiceSpec, ...] = SERVICES) -> ServiceSpec:
    """Look a service up by name; the error lists the known ones."""
    for s in services:
        if s.name == name:
            return s
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in services)}")
