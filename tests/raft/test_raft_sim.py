"""The deterministic simulation over many seeds (RAFT_SIM_SEEDS, default 2,000).

The simulation steps the consensus core itself (no asyncio), and runs the same seeds again
with the asyncio driver around the core (RAFT_SIM_DRIVER_SEEDS). Every seed runs a 3- or 5-node
cluster through crashes (losing un-synced writes, tearing the last one), partitions, message
loss, duplication and reordering, and checks election safety, log matching, leader
completeness, state-machine safety, linearizable reads and that every acknowledged proposal
survives. A failing seed prints its one-line replay command."""

from __future__ import annotations

import asyncio
import logging
import os
import random

import pytest

from plasmacloud.raft.codec import NORMAL, LogEntry
from plasmacloud.raft.sim import InvariantViolation, SimDisk, Simulation, replay_command
from plasmacloud.raft.storage import Storage

SEEDS = int(os.environ.get("RAFT_SIM_SEEDS", "2000"))
CHUNK = 100
# the same runs with the asyncio driver (RaftNode on a SimLoop) around the core
DRIVER_SEEDS = int(os.environ.get("RAFT_SIM_DRIVER_SEEDS", str(SEEDS)))
RUNS = [(False, s) for s in range(0, SEEDS, CHUNK)] + [
    (True, s) for s in range(0, DRIVER_SEEDS, CHUNK)
]


@pytest.mark.parametrize(("driver", "start"), RUNS)
def test_simulation_seeds(driver: bool, start: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)  # the engine logs every election and torn tail
    failures = []
    totals = {"acked": 0, "crashes": 0, "torn": 0, "snapshots": 0, "membership": 0}
    seeds = DRIVER_SEEDS if driver else SEEDS
    for seed in range(start, min(start + CHUNK, seeds)):
        try:
            stats = Simulation(seed, driver=driver).run()
        except Exception as exc:  # an invariant, or the engine itself blew up
            failures.append(f"seed {seed}: {exc!r}\n  replay: {replay_command(seed, driver)}")
            continue
        totals["acked"] += stats.acked
        totals["crashes"] += stats.crashes
        totals["torn"] += stats.torn_writes
        totals["snapshots"] += stats.snapshots_installed
        totals["membership"] += stats.membership_changes
    assert not failures, "\n".join(failures)
    # the faults really happened (a harness that injects nothing proves nothing)
    assert totals["acked"] > 0 and totals["crashes"] > 0
    if seeds - start >= CHUNK:
        assert totals["torn"] > 0 and totals["snapshots"] > 0 and totals["membership"] > 0


@pytest.mark.parametrize("driver", [False, True])
def test_same_seed_same_run(driver: bool) -> None:
    """Determinism: a seed is a complete description of a run (so replays reproduce)."""
    a, b = Simulation(7, driver=driver).run(), Simulation(7, driver=driver).run()
    assert a == b


def _first_violation(seeds: int) -> InvariantViolation | None:
    for seed in range(seeds):
        try:
            Simulation(seed).run()
        except InvariantViolation as exc:
            return exc
    return None


def test_harness_detects_a_broken_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Votes granted without the log up-to-date check must be caught as a safety failure."""
    from plasmacloud.raft.core import RaftCore

    monkeypatch.setattr(RaftCore, "_log_ok", lambda self, index, term: True)
    assert _first_violation(60) is not None, "60 seeds of a broken engine passed every check"


def test_harness_detects_unconfirmed_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """ReadIndex answered at once (no commit of the leader's term, no heartbeat round) must
    be caught as a linearizability failure."""
    from plasmacloud.raft.core import RaftCore

    def read_at_once(self: RaftCore, ctx: object) -> bool:
        self._rd.read_states.append((ctx, self.commit_index))
        return False

    monkeypatch.setattr(RaftCore, "read_index", read_at_once)
    assert "linearizability" in str(_first_violation(200))


async def test_sim_disk_durability_never_goes_back() -> None:
    """An fdatasync overtaken by a newer blocking sync (a segment roll while the worker
    thread's sync of the same file is in flight) must not un-persist data on a crash:
    otherwise the simulated disk tears a finished segment, which the storage rightly
    reports as corruption (seed 85 with commit heartbeats that expect no answer)."""
    disk = SimDisk(random.Random(1), (0.01, 0.01))
    store = Storage(disk.mount(), "/sim/n1", segment_bytes=200)
    store.open()
    entries = [LogEntry.make(i, 1, NORMAL, b"x" * 40) for i in range(1, 9)]
    store.append(entries[:3])
    in_flight = asyncio.ensure_future(store.sync())  # captures entries 1-3 only
    await asyncio.sleep(0)
    store.append(entries[3:6])  # past segment_bytes: the next append rolls
    store.append(entries[6:])  # roll: blocking sync of the first segment (1-6)
    await in_flight  # completes after the roll's sync
    for _ in range(20):  # crashes tear only unsynced data in the newest segment
        disk.crash()
        recovered = Storage(disk.mount(), "/sim/n1", segment_bytes=200).open()
        assert [e.index for e in recovered.entries][:6] == [1, 2, 3, 4, 5, 6]
