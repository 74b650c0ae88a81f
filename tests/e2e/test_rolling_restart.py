"""`plasma cluster rolling-restart` on a live lab (process and netns) while the chaos run's
clients write: every node restarts once (the leader last), the history is linearizable
with no acknowledged write lost, and the longest gap without a completed operation (the
unavailability window) is printed. A degraded cluster is refused before anything stops."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import plasmacloud
from plasmacloud.common.tls import client_context
from plasmacloud.flaredb.client import Client
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


def new_build(root: Path, version: str) -> Path:
    """A `plasma` executable of another version: this build's package copied beside a
    console script, as a new venv would hold it (the script's directory comes first on
    its sys.path)."""
    shutil.copytree(Path(plasmacloud.__file__).parent, root / "plasmacloud")
    init = root / "plasmacloud" / "__init__.py"
    init.write_text(init.read_text().replace(plasmacloud.__version__, version))
    script = root / "plasma"
    script.write_text(f"#!{sys.executable}\nfrom plasmacloud.cli import app\n\napp()\n")
    script.chmod(0o755)
    return script


async def test_an_upgrade_rolls_every_node_onto_the_new_build_under_the_chaos_workload(
    lab: IamLab, tmp_path: Path
) -> None:
    """`--upgrade`: each node comes back on the new build (FlareDB's /status says its
    version) while the chaos run's clients write; the history is linearizable."""
    plasma = new_build(tmp_path / "new", "9.9.9")
    chaos = await ChaosClients.open(lab.lab, "chaos_upgrade")
    writing = asyncio.gather(*chaos.workers(CHAOS_LIMIT_S))
    try:
        await asyncio.sleep(1.0)
        done = await asyncio.to_thread(roll, lab.lab, "--upgrade", str(plasma), "--json")
        chaos.stop()
        await writing
        await chaos.final_reads(lab.lab.spec.node_ids[0])
    finally:
        await chaos.close()
    assert done.returncode == 0, done.stdout + done.stderr
    chaos.check("upgrade")
    tls = client_context(lab.tls)
    versions = {url: Client(url, tls).status()["build"]["version"] for url in lab.flaredb_urls()}
    assert set(versions.values()) == {"9.9.9"}, versions
    saved = Lab.open(lab.lab.layout.root).state
    assert saved.plasma == str(plasma)
    assert {p.argv[0] for p in saved.processes} == {str(plasma)}


def test_an_upgrade_to_something_that_is_no_plasma_changes_nothing(
    lab: IamLab, tmp_path: Path
) -> None:
    before = Lab.open(lab.lab.layout.root).state
    done = roll(lab.lab, "--upgrade", str(tmp_path / "missing"))
    assert done.returncode == 2 and "no such executable" in done.stderr, done.stderr
    fake = tmp_path / "fake"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    done = roll(lab.lab, "--upgrade", str(fake))
    assert done.returncode == 2 and "not a working plasma" in done.stderr, done.stderr
    assert Lab.open(lab.lab.layout.root).state == before  # nothing switched or restarted


def test_a_degraded_cluster_is_refused(lab: IamLab) -> None:
    lab.lab.backend.stop_node("node03")
    done = roll(lab.lab)
    assert done.returncode == 1 and "not healthy" in done.stderr, done.stderr
    assert not lab.lab.backend.node_status("node03").running  # nothing else was touched
