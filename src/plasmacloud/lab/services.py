"""The services a lab node runs: one entry per service, in start order.

Adding a service to the lab (FlareDB, IAM) means appending a :class:`ServiceSpec` to
:data:`SERVICES`: the service's endpoints (:mod:`plasmacloud.cluster.services`) and how
to start it from the node's ``cluster-config.json``. Everything else (start, stop, logs,
health waits) is generic.

The lab runs IAM on every node and turns auth on in Chainfire and FlareDB
(:func:`with_auth`). The lab's own tooling (probe, validate, chaos) uses the operator's
certificate (CN ``lab.layout.OPERATOR_NAME``), which the lab's IAM bootstrap makes an
admin user by policy (``Lab.bootstrap_iam``).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from plasmacloud.cluster import services as endpoints
from plasmacloud.cluster.services import Service
from plasmacloud.iam.endpoints import iam_urls

if TYPE_CHECKING:  # annotations only: the CLI names the services at start
    from plasmacloud.common.config import NodeConfig


@dataclass(frozen=True, kw_only=True)
class ServiceSpec(Service):
    """A service as the lab starts it: its endpoints plus the long-running process."""

    # (path of cluster-config.json, the config, the `plasma` executable to run) -> argv of
    # the long-running process
    argv: Argv


Argv = Callable[[Path, "NodeConfig", str], list[str]]


def launched(service: Service, argv: Argv) -> ServiceSpec:
    """``service``'s endpoints, started with ``argv``."""
    fields = {f.name: getattr(service, f.name) for f in dataclasses.fields(service)}
    return ServiceSpec(**fields, argv=argv)


def plasma_executable() -> str:
    """The ``plasma`` console script of this Python (so a venv's lab runs that venv)."""
    beside = Path(sys.executable).parent / "plasma"
    if beside.exists():
        return str(beside)
    found = shutil.which("plasma")
    if found is None:
        raise FileNotFoundError("the `plasma` command is not installed (pip install -e .)")
    return found


def plasma_serve(service: str) -> Argv:
    """argv builder for ``plasma <service> serve --config PATH``."""

    def argv(config_path: Path, _cfg: NodeConfig, plasma: str) -> list[str]:
        return [plasma, service, "serve", "--config", str(config_path)]

    return argv


CHAINFIRE = launched(endpoints.CHAINFIRE, plasma_serve("chainfire"))
FLAREDB = launched(endpoints.FLAREDB, plasma_serve("flaredb"))
IAM = launched(endpoints.IAM, plasma_serve("iam"))


def with_auth(spec: ServiceSpec) -> ServiceSpec:
    """``spec`` started with auth on: ``--iam-url`` for every IAM node of the cluster
    (this node's first).

    Only with TLS: over plain TCP tokens would travel in the clear and the lab's own
    tooling would have no certificate to be known by.
    """

    def argv(config_path: Path, cfg: NodeConfig, plasma: str) -> list[str]:
        if not cfg.tls.enabled:
            return spec.argv(config_path, cfg, plasma)
        urls = [arg for url in iam_urls(cfg) for arg in ("--iam-url", url)]
        return [*spec.argv(config_path, cfg, plasma), *urls]

    return replace(spec, argv=argv)


SERVICES: tuple[ServiceSpec, ...] = (with_auth(CHAINFIRE), with_auth(FLAREDB), IAM)
