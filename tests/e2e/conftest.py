"""A real 3-process Chainfire cluster over mTLS on a scratch loopback range, per test module
(read-only client tests share it) or per test (fault tests get a fresh one)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.common.config import NodeConfig
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import scratch_netns_spec
from plasmacloud.lab.services import CHAINFIRE, ServiceSpec
from plasmacloud.lab.spec import scratch_spec

READY_TIMEOUT_S = 60.0


@contextlib.contextmanager
def running_lab(
    root: Path, services: tuple[ServiceSpec, ...] = (CHAINFIRE,), backend: str = "process"
) -> Iterator[Lab]:
    """A new ready lab running ``services`` in ``root`` on a scratch range of ``backend``
    ("process" or "netns"); torn down even if the test fails."""
    spec = scratch_netns_spec() if backend == "netns" else scratch_spec()
    lab = Lab.open(root, spec, services=services, backend=backend)
    try:
        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One healthy cluster for a whole module; torn down even if its tests fail."""
    with running_lab(tmp_path_factory.mktemp("lab")) as lab:
        yield lab


@pytest.fixture
def fresh_lab(tmp_path: Path) -> Iterator[Lab]:
    """A new cluster for a test that kills or restarts nodes."""
    with running_lab(tmp_path / "lab") as lab:
        yield lab


@pytest.fixture
async def channels(shared_lab: Lab) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """An mTLS channel to every node of the shared lab, as the operator."""
    chans = {
        c.node_id: dial(client_target(c), shared_lab.operator_tls) for c in shared_lab.configs()
    }
    try:
        yield chans
    finally:
        for ch in chans.values():
            await ch.close()


def etcdctl_env(lab: Lab) -> dict[str, str]:
    """The environment `plasma lab env` would export, for running etcdctl against ``lab``."""
    env = {**os.environ, "ETCDCTL_API": "3"}
    env["ETCDCTL_ENDPOINTS"] = ",".join(lab.spec.client_endpoints())
    env["ETCDCTL_CACERT"] = str(lab.layout.ca_file)
    env["ETCDCTL_CERT"] = str(lab.layout.operator_cert)
    env["ETCDCTL_KEY"] = str(lab.layout.operator_key)
    return env


def with_flags(spec: ServiceSpec, *flags: str) -> ServiceSpec:
    """``spec`` started with extra command-line flags."""

    def argv(config_path: Path, cfg: NodeConfig, plasma: str) -> list[str]:
        return [*spec.argv(config_path, cfg, plasma), *flags]

    return replace(spec, argv=argv)


def scrape_metrics(url: str, context: ssl.SSLContext | None = None) -> dict[str, float]:
    """A /metrics page's unlabelled series as numbers (prometheus_client's own parser)."""
    with urllib.request.urlopen(url, timeout=10, context=context) as resp:
        text = resp.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def member_metrics(cfg: NodeConfig) -> dict[str, float]:
    """A Chainfire member's /metrics series without labels, as numbers."""
    return scrape_metrics(f"http://{cfg.listen_host}:{cfg.ports.chainfire_metrics}/metrics")
