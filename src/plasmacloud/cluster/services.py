"""The services a PlasmaCloud node serves and where each answers: health, metrics, API URLs.

This is the client's view of a node: how it was started is the starter's business (the
lab adds how it starts each service: its ``ServiceSpec``). When IAM runs, the
cluster's auth is on: tokens from any IAM node are checked by every service, and a
client certificate's CN names the IAM principal it speaks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plasmacloud.iam.endpoints import iam_url

if TYPE_CHECKING:  # annotations only: the CLI names the services at start
    from plasmacloud.common.config import NodeConfig


@dataclass(frozen=True)
class Service:
    """Where one service of a node says how it is."""

    name: str
    # the config -> URL answering 200 (and ``{"health": "true"}`` if JSON) when healthy
    health_url: Callable[[NodeConfig], str]
    # the config -> Prometheus scrape URL, if the service exports metrics
    metrics_url: Callable[[NodeConfig], str] | None = None


CHAINFIRE = Service(
    name="chainfire",
    health_url=lambda c: f"http://{c.listen_host}:{c.ports.chainfire_metrics}/health",
    metrics_url=lambda c: f"http://{c.listen_host}:{c.ports.chainfire_metrics}/metrics",
)


def flaredb_url(c: NodeConfig) -> str:
    """FlareDB's HTTP API of one node (https with client certificates when TLS is on)."""
    return f"{'https' if c.tls.enabled else 'http'}://{c.listen_host}:{c.ports.flaredb_http}"


FLAREDB = Service(
    name="flaredb",
    # /readyz answers 200 once the node serves and knows a Raft leader.
    health_url=lambda c: flaredb_url(c) + "/readyz",
    metrics_url=lambda c: flaredb_url(c) + "/metrics",
)


def iam_base_url(c: NodeConfig) -> str:
    """IAM's base URL on one node (https when the cluster runs TLS)."""
    return iam_url(c.me, c.tls.enabled)


IAM = Service(
    name="iam",
    # 503 until the node reaches its store (Chainfire)
    health_url=lambda c: iam_base_url(c) + "/health",
    metrics_url=lambda c: iam_base_url(c) + "/metrics",
)

# every service of a PlasmaCloud node, in start order
SERVICES: tuple[Service, ...] = (CHAINFIRE, FLAREDB, IAM)


def runs_iam(services: tuple[Service, ...]) -> bool:
    """True if these services include IAM (then auth is on and an admin is bootstrapped)."""
    return any(s.name == IAM.name for s in services)


def service_named(name: str, services: tuple[Service, ...] = SERVICES) -> Service:
    """Look a service up by name; the error lists the known ones."""
    for s in services:
        if s.name == name:
            return s
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in services)}")
