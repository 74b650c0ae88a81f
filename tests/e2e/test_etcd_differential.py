"""Chainfire against etcd 3.4, side by side: generated operation sequences run on a 3-node
etcd and a 3-node Chainfire (both mTLS, auth off) started for this module, and every
answer compared field by field (see etcd_differential for what is normalised)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plasmacloud.lab.control import Lab
from plasmacloud.lab.probe import client_target, dial
from plasmacloud.lab.reference import ETCD
from plasmacloud.lab.services import CHAINFIRE
from plasmacloud.lab.spec import scratch_spec

from .conftest import READY_TIMEOUT_S
from .etcd_differential import (
    Op,
    Side,
    WatchSpec,
    first_difference,
    operations,
    run_sequence,
    watch_specs,
)

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


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    assert shutil.which("etcd"), "etcd-server must be installed (scripts/setup.sh)"
    labs = [
        Lab.open(tmp_path_factory.mktemp(s.name), scratch_spec(), services=(s,))
        for s in (ETCD, CHAINFIRE)
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


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(operations, min_size=1, max_size=12),
    watches=st.lists(watch_specs, max_size=3),
)
def test_generated_sequences_answer_like_etcd(
    peers: Peers, ops: list[Op], watches: list[WatchSpec]
) -> None:
    etcd, chainfire = peers.both(run_sequence, ops, watches)
    difference = first_difference(ops, watches, etcd, chainfire)
    assert difference is None, difference
