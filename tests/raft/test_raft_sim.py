"""The deterministic simulation over many seeds (RAFT_SIM_SEEDS, default 2,000).

Every seed runs a 3- or 5-node cluster through crashes (losing un-synced writes, tearing the
last one), partitions, message loss, duplication and reordering, and checks election safety,
log matching, leader completeness, state-machine safety, linearizable reads and that every
acknowledged proposal survives. A failing seed prints its one-line replay command.
"""

from __future__ import annotations

import logging
import os

import pytest

from plasmacloud.raft.sim import InvariantViolation, Simulation, replay_command

SEEDS = int(os.environ.get("RAFT_SIM_SEEDS", "2000"))
CHUNK = 100


@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK))
def test_simulation_seeds(start: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)  # the engine logs every election and torn tail
    failures = []
    totals = {"acked": 0, "crashes": 0, "torn": 0, "snapshots": 0, "membership": 0}
    for seed in range(start, min(start + CHUNK, SEEDS)):
        try:
            stats = Simulation(seed).run()
        except Exception as exc:  # an invariant, or the engine itself blew up
            failures.append(f"seed {seed}: {exc!r}\n  replay: {replay_command(seed)}")
            continue
        totals["acked"] += stats.acked
        totals["crashes"] += stats.crashes
        totals["torn"] += stats.torn_writes
        totals["snapshots"] += stats.snapshots_installed
        totals["membership"] += stats.membership_changes
    assert not failures, "\n".join(failures)
    # the faults really happened (a harness that injects nothing proves nothing)
    assert totals["acked"] > 0 and totals["crashes"] > 0
    if SEEDS - start >= CHUNK:
        assert totals["torn"] > 0 and totals["snapshots"] > 0 and totals["membership"] > 0


def test_same_seed_same_run() -> None:
    """Determinism: a seed is a complete description of a run (so replays reproduce)."""
    a, b = Simulation(7).run(), Simulation(7).run()
    assert a == b


def test_harness_detects_a_broken_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Votes granted without the log up-to-date check must be caught as a safety failure."""
    from plasmacloud.raft.node import RaftNode

    monkeypatch.setattr(RaftNode, "_log_ok", lambda self, index, term: True)
    caught = []
    for seed in range(60):
        try:
            Simulation(seed).run()
        except InvariantViolation as exc:
            caught.append((seed, exc))
            break
    assert caught, "60 seeds of a broken engine passed every check"
