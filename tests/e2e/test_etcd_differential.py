"""Chainfire against etcd 3.4, side by side: generated operation sequences run on a 3-node
etcd and a 3-node Chainfire (both mTLS, auth off) started for this module, and every
answer compared field by field (see etcd_differential for what is normalised).

Everything runs twice: with Chainfire's client port served by the member itself, and by
two frontend worker processes per member (``--frontends 2``), which must answer alike."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.lab.control import Lab
from plasmacloud.lab.reference import ETCD
from plasmacloud.lab.services import CHAINFIRE
from plasmacloud.lab.spec import scratch_spec

from . import etcd_scenarios
from .conftest import READY_TIMEOUT_S, with_flags
from .etcd_differential import (
    Op,
    Side,
    WatchSpec,
    first_difference,
    operations,
    run_sequence,
    watch_specs,
)
from .etcd_scenarios import PROGRESS_INTERVAL

pytestmark = pytest.mark.slow

T = TypeVar("T")


@dataclass
class Peers:
    """Both clusters, reached through their first member, on one event loop."""

    runner: asyncio.Runner
    etcd: Side
    chainfire: Side

    def both(self, fn: Callable[..., Awaitable[T]], *args: Any) -> tuple[T, T]:
        """``fn(side, *args)`` on etcd and on Chainfire at once: (etcd's, Chainfire's)."""

        async def go() -> tuple[T, T]:
            return await asyncio.gather(fn(self.etcd, *args), fn(self.chainfire, *args))

        return self.runner.run(go())


# both with the same short progress notify interval, so that the scenario can see it
ETCD_SERVICE = with_flags(
    ETCD, f"--experimental-watch-progress-notify-interval={PROGRESS_INTERVAL:g}s"
)
CHAINFIRE_SERVICE = with_flags(CHAINFIRE, f"--watch-progress-notify-interval={PROGRESS_INTERVAL:g}")


@pytest.fixture(scope="module", params=[0, 2], ids=["in-process", "frontends"])
def peers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Peers]:
    assert shutil.which("etcd"), "etcd-server must be installed (scripts/setup.sh)"
    chainfire = with_flags(CHAINFIRE_SERVICE, "--frontends", str(request.param))
    labs = [
        Lab.open(tmp_path_factory.mktemp(s.name), scratch_spec(), services=(s,))
        for s in (ETCD_SERVICE, chainfire)
    ]
    with asyncio.Runner() as runner:
        try:
            for lab in labs:
                lab.up()
            for lab in labs:
                runner.run(lab.wait_ready(timeout=READY_TIMEOUT_S))

            async def open_sides() -> list[Side]:
                return [
                    Side(
                        lab.services[0].name,
                        dial(client_target(lab.configs()[0]), lab.operator_tls),
                    )
                    for lab in labs
                ]

            etcd, chainfire = runner.run(open_sides())
            try:
                yield Peers(runner, etcd, chainfire)
            finally:
                for side in (etcd, chainfire):
                    runner.run(side.channel.close())
        finally:
            for lab in labs:
                lab.down()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(operations, min_size=3, max_size=16),
    watches=st.lists(watch_specs, max_size=3),
)
def test_generated_sequences_answer_like_etcd(
    peers: Peers, ops: list[Op], watches: list[WatchSpec]
) -> None:
    etcd, chainfire = peers.both(run_sequence, ops, watches)
    difference = first_difference(ops, watches, etcd, chainfire)
    assert difference is None, difference


@pytest.mark.parametrize(
    "scenario",
    [
        etcd_scenarios.lease_edges,
        etcd_scenarios.lease_expiry,
        etcd_scenarios.keep_alive_stream,
        etcd_scenarios.txn_limits,
        etcd_scenarios.negative_revisions,
        etcd_scenarios.maintenance_answers,
        etcd_scenarios.nospace_alarm,
        etcd_scenarios.progress,
        etcd_scenarios.cluster_shape,
        etcd_scenarios.errors_outside_kv,
        etcd_scenarios.watch_requests,
        etcd_scenarios.watch_headers,
        etcd_scenarios.odd_enums,
        etcd_scenarios.lock_service,
        etcd_scenarios.election_service,
        etcd_scenarios.election_observe,
    ],
    ids=lambda f: f.__name__,
)
def test_scenario_answers_like_etcd(
    peers: Peers, scenario: Callable[[Side], Awaitable[Any]]
) -> None:
    etcd, chainfire = peers.both(scenario)
    assert chainfire == etcd, differing(etcd, chainfire)


def differing(etcd: Any, chainfire: Any) -> str:
    """Every answer of a scenario where the two differ."""
    if isinstance(etcd, list) and isinstance(chainfire, list) and len(etcd) == len(chainfire):
        return "".join(
            f"\nanswer {i}\n  etcd:      {a!r}\n  chainfire: {b!r}"
            for i, (a, b) in enumerate(zip(etcd, chainfire, strict=True))
            if a != b
        )
    return f"\n  etcd:      {etcd!r}\n  chainfire: {chainfire!r}"
