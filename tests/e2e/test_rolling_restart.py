"""`plasma cluster rolling-restart` on a live lab while a client writes: every node
restarts once (the leader last), no acknowledged write is lost, and the longest gap
between two acknowledged writes (the unavailability window) is printed. A degraded
cluster is refused before anything stops."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasmacloud.chainfire.client import ChainfireClient
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import plasma_executable

from .test_iam_lab import IamLab, etcdctl, started_iam_lab

pytestmark = pytest.mark.slow

WRITER_LIMIT_S = 300.0  # the writer stops by itself after this, whatever happens


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[IamLab]:
    with started_iam_lab(tmp_path / "lab") as started:
        yield started


def roll(lab: Lab, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [plasma_executable(), "cluster", "rolling-restart", "--dir", str(lab.layout.root), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )


async def write_until(stop: threading.Event, lab: Lab) -> tuple[list[float], int]:
    """Put keys w/NNNNN until ``stop``: (times of acknowledged puts, failed puts)."""
    endpoints = [f"{c.listen_host}:{c.ports.chainfire_client}" for c in lab.configs()]
    client = ChainfireClient(endpoints, lab.operator_tls, timeout=5)
    acked: list[float] = []
    failed = 0
    deadline = time.monotonic() + WRITER_LIMIT_S
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                await client.put(f"w/{len(acked) + failed:05d}", b"v")
                acked.append(time.monotonic())
            except Exception:  # unavailable for a moment: counted, the writer goes on
                failed += 1
            await asyncio.sleep(0.02)
    finally:
        await client.close()
    return acked, failed


def test_rolling_restart_under_writes_loses_nothing(lab: IamLab) -> None:
    stop = threading.Event()
    result: list[tuple[list[float], int]] = []
    writer = threading.Thread(target=lambda: result.append(asyncio.run(write_until(stop, lab.lab))))
    writer.start()
    try:
        time.sleep(1.0)
        done = roll(lab.lab, "--json")
        time.sleep(1.0)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    restarted = json.loads(done.stdout)
    assert sorted(r["node_id"] for r in restarted) == ["node01", "node02", "node03"]
    assert [r["was_leader"] for r in restarted] == [False, False, True]
    acked, failed = result[0]
    gaps = [b - a for a, b in itertools.pairwise(acked)]
    print(
        f"rolling restart: {len(acked)} puts acknowledged, {failed} failed, longest gap "
        f"{max(gaps):.2f} s; per node {[round(r['seconds'], 1) for r in restarted]} s"
    )
    keys = etcdctl(lab, "get", "w/", "--prefix", "--keys-only")
    assert keys.returncode == 0, keys.stderr
    stored = {k for k in keys.stdout.split() if k}
    assert len(stored) >= len(acked)  # every acknowledged put is there (failed ones may be too)


def test_a_degraded_cluster_is_refused(lab: IamLab) -> None:
    lab.lab.backend.stop_node("node03")
    done = roll(lab.lab)
    assert done.returncode == 1 and "not healthy" in done.stderr, done.stderr
    assert not lab.lab.backend.node_status("node03").running  # nothing else was touched
