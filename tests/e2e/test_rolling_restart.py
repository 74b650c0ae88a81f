"""`plasma cluster rolling-restart` on a live lab (process and netns) while the chaos run's
clients write: every node restarts once (the leader last), the history is linearizable
with no acknowledged write lost, and the longest gap without a completed operation (the
unavailability window) is printed. A degraded cluster is refused before anything stops."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import plasma_executable

from .chaos_clients import ChaosClients
from .test_iam_lab import IamLab, started_iam_lab

pytestmark = pytest.mark.slow

CHAOS_LIMIT_S = 300.0  # the chaos clients stop by themselves after this, whatever happens


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[IamLab]:
    with started_iam_lab(tmp_path / "lab") as started:
        yield started


@pytest.fixture(params=["process", "netns"])
def any_lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[IamLab]:
    with started_iam_lab(tmp_path / "lab", request.param) as started:
        yield started


def roll(lab: Lab, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [plasma_executable(), "cluster", "rolling-restart", "--dir", str(lab.layout.root), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )


async def test_rolling_restart_under_the_chaos_workload_loses_nothing(any_lab: IamLab) -> None:
    """The chaos run's clients write to every node while every node restarts once (the
    leader last, handing leadership over as it stops): the history is linearizable, every
    acknowledged write is in the final reads, and each service's longest gap without a
    completed operation is printed."""
    lab = any_lab.lab
    chaos = await ChaosClients.open(lab, "chaos_roll")
    writing = asyncio.gather(*chaos.workers(CHAOS_LIMIT_S))
    try:
        await asyncio.sleep(1.0)
        began = chaos.rec.now()
        done = await asyncio.to_thread(roll, lab, "--json")
        ended = chaos.rec.now()
        await asyncio.sleep(1.0)
        chaos.stop()
        await writing
        await chaos.final_reads(lab.spec.node_ids[0])
    finally:
        await chaos.close()
    assert done.returncode == 0, done.stdout + done.stderr
    restarted = json.loads(done.stdout)
    assert sorted(r["node_id"] for r in restarted) == ["node01", "node02", "node03"]
    assert [r["was_leader"] for r in restarted] == [False, False, True]
    chaos.check("rolling restart")
    during = [op for op in chaos.rec.ops if began <= op.invoke <= ended]
    print(
        f"\nrolling restart ({lab.state.backend}, {ended - began:.1f} s; per node "
        f"{[round(r['seconds'], 1) for r in restarted]} s): {len(chaos.acknowledged())} writes "
        f"acknowledged; of {len(during)} requests during it "
        f"{sum(op.outcome != 'ok' for op in during)} failed; longest gap without a completed "
        f"operation: Chainfire {chaos.longest_gap(began, ended, False):.2f} s, "
        f"FlareDB {chaos.longest_gap(began, ended, True):.2f} s"
    )


def test_a_degraded_cluster_is_refused(lab: IamLab) -> None:
    lab.lab.backend.stop_node("node03")
    done = roll(lab.lab)
    assert done.returncode == 1 and "not healthy" in done.stderr, done.stderr
    assert not lab.lab.backend.node_status("node03").running  # nothing else was touched
