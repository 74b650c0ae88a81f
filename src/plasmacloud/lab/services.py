"""The services a lab node runs: one entry per service, in start order.

Adding a service to the lab (FlareDB, IAM) means appending a :class:`ServiceSpec` to
:data:`SERVICES`: how to start it from the node's ``cluster-config.json`` and where it
says it is healthy. Everything else (start, stop, logs, health waits) is generic.

The lab runs IAM on every node and turns auth on in Chainfire and FlareDB
(:func:`with_auth`): tokens from any IAM node are checked by every service, and a client
certificate's CN names the IAM principal it speaks for. The lab's own tooling (probe,
validate, chaos) uses the operator's certificate (CN ``lab.layout.OPERATOR_NAME``),
which the lab's IAM bootstrap makes an admin user by policy (``Lab.bootstrap_iam``).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from plasmacloud.iam.endpoints import iam_url, iam_urls

if TYPE_CHECKING:  # annotations only: the CLI names the services at start
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


def iam_base_url(c: NodeConfig) -> str:
    """IAM's base URL on one node (https when the lab runs TLS)."""
    return iam_url(c.me, c.tls.enabled)


IAM = ServiceSpec(
    name="iam",
    argv=plasma_serve("iam"),
    # 503 until the node reaches its store (Chainfire)
    health_url=lambda c: iam_base_url(c) + "/health",
    metrics_url=lambda c: iam_base_url(c) + "/metrics",
)


def with_auth(spec: ServiceSpec) -> ServiceSpec:
    """``spec`` started with auth on: ``--iam-url`` for every IAM node of the cluster
    (this node's first).

    Only with TLS: over plain TCP tokens would travel in the clear and the lab's own
    tooling would have no certificate to be known by.
    """

    def argv(config_path: Path, cfg: NodeConfig) -> list[str]:
        if not cfg.tls.enabled:
            return spec.argv(config_path, cfg)
        urls = [arg for url in iam_urls(cfg) for arg in ("--iam-url", url)]
        return [*spec.argv(config_path, cfg), *urls]

    return replace(spec, argv=argv)


SERVICES: tuple[ServiceSpec, ...] = (with_auth(CHAINFIRE), with_auth(FLAREDB), IAM)


def runs_iam(services: tuple[ServiceSpec, ...]) -> bool:
    """True if these services include IAM (then auth is on and an admin is bootstrapped)."""
    return any(s.name == IAM.name for s in services)


def service_named(name: str, services: tuple[ServiceSpec, ...] = SERVICES) -> ServiceSpec:
    """Look a service up by name; the error lists the known ones."""
    for s in services:
        if s.name == name:
            return s
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in services)}")
