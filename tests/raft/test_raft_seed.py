"""A new group seeded from a snapshot (what a restore writes)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from plasmacloud.raft.codec import SnapshotMeta
from plasmacloud.raft.core import RaftCore
from plasmacloud.raft.disk import OsDisk
from plasmacloud.raft.persist import load
from plasmacloud.raft.seed import SeedError, seed_group
from plasmacloud.raft.storage import Storage

MEMBERS = {"a": "a:1", "b": "b:1", "c": "c:1"}


def test_a_seeded_member_loads_the_snapshot_as_its_whole_log(tmp_path: Path) -> None:
    assert seed_group(tmp_path, MEMBERS, b"state") == SnapshotMeta(1, 1, MEMBERS)
    storage = Storage(OsDisk(), str(tmp_path))
    core = RaftCore("a", election_ticks=(10, 20), rng=random.Random(1))
    load(storage, core, {})
    storage.close()
    assert (core.snap_index, core.snap_term, core.last_index, core.term) == (1, 1, 1, 1)
    assert core.configs == [(1, MEMBERS)]


def test_seeding_refuses_a_directory_with_raft_state(tmp_path: Path) -> None:
    seed_group(tmp_path, MEMBERS, b"state")
    with pytest.raises(SeedError, match="already holds Raft state"):
        seed_group(tmp_path, MEMBERS, b"other")
    assert Storage(OsDisk(), str(tmp_path)).read_snapshot()[1] == b"state"
