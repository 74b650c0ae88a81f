"""Forcing a one-member group from a survivor's data (etcd's --force-new-cluster): the log
and applied state stay, the survivor alone is the membership, elects itself and serves."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from raft_cluster import Cluster

from plasmacloud.raft import persist
from plasmacloud.raft.codec import CONFIG, NORMAL, HardState, LogEntry, encode_members
from plasmacloud.raft.core import LEADER, RaftCore
from plasmacloud.raft.disk import OsDisk
from plasmacloud.raft.force import ForceNewClusterError, force_new_cluster
from plasmacloud.raft.storage import Storage

MEMBERS = {"n1": "h:1", "n2": "h:2", "n3": "h:3"}


async def _write_log(directory: Path, hs: HardState, entries: list[LogEntry]) -> None:
    s = Storage(OsDisk(), str(directory))
    s.open()
    s.save_hard_state(hs)
    s.append(entries)
    await s.sync()
    s.close()


def _loaded_core(directory: Path, node_id: str) -> RaftCore:
    core = RaftCore(node_id, election_ticks=(5, 10), rng=random.Random(1))
    storage = Storage(OsDisk(), str(directory))
    persist.load(storage, core, {})
    storage.close()
    core.start(0)
    return core


async def test_the_rewrite_appends_a_one_member_configuration_above_every_term(
    tmp_path: Path,
) -> None:
    entries = [LogEntry.make(i, 2, NORMAL, b"cmd-%d" % i) for i in range(1, 6)]
    await _write_log(tmp_path, HardState(4, "n2", dict(MEMBERS)), entries)

    forced = force_new_cluster(tmp_path, "n3")

    assert forced.previous == MEMBERS
    assert forced.members == {"n3": "h:3"}
    assert (forced.index, forced.term) == (6, 5)
    core = _loaded_core(tmp_path, "n3")
    assert core.members == {"n3": "h:3"} and core.term == 5 and core.voted_for == ""
    assert [e.data for e in core.log[:5]] == [e.data for e in entries]
    # alone it wins its own election and its no-op commits the whole old log
    for _ in range(20):
        core.tick()
        if core.role == LEADER:
            break
    assert core.role == LEADER and core.term == 6
    while core.has_ready():
        core.ready()
    assert core.sync_begin() == 7
    core.synced(7)
    assert core.commit_index == 7
    assert [e.data for e in core.committed_batch() if e.kind == NORMAL] == [e.data for e in entries]


async def test_the_latest_configuration_in_the_log_is_the_one_rewritten(tmp_path: Path) -> None:
    two = {"n1": "h:1", "n2": "h:2"}
    entries = [
        LogEntry.make(1, 1, NORMAL, b"a"),
        LogEntry.make(2, 1, CONFIG, encode_members(two)),
    ]
    await _write_log(tmp_path, HardState(1, "", dict(MEMBERS)), entries)

    with pytest.raises(ForceNewClusterError, match="n3 is not a member"):
        force_new_cluster(tmp_path, "n3")
    assert force_new_cluster(tmp_path, "n2").previous == two


def test_a_directory_without_raft_state_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ForceNewClusterError, match="no Raft data"):
        force_new_cluster(tmp_path / "missing", "n1")
    with pytest.raises(ForceNewClusterError, match="no Raft state"):
        force_new_cluster(tmp_path, "n1")


async def test_a_survivor_of_a_real_group_serves_every_command_alone(tmp_path: Path) -> None:
    # a low snapshot threshold: the survivor's state is a snapshot plus a log after it
    cluster = Cluster(tmp_path, snapshot_threshold=8)
    await cluster.start_all()
    try:
        leader = await cluster.leader()
        commands = [b"cmd-%d" % i for i in range(20)]
        for c in commands:
            await leader.propose(c)
        survivor = next(n for n in cluster.nodes if n != leader.id)
        async with asyncio.timeout(10):
            while cluster.sms[survivor].commands() != commands:
                await asyncio.sleep(0.02)
    finally:
        await cluster.stop_all()
    assert list((tmp_path / survivor).glob("snapshot"))  # the rewrite keeps a snapshot

    forced = force_new_cluster(tmp_path / survivor, survivor)

    node = await cluster.start(survivor)  # bootstrap config lists 3: the data decides
    try:
        assert (await cluster.leader()).id == survivor
        assert dict((m.node_id, m.address) for m in node.status().members) == forced.members
        await node.propose(b"after")
        assert cluster.sms[survivor].commands() == [*commands, b"after"]
    finally:
        await cluster.stop_all()
