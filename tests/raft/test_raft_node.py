"""Three real RaftNodes on loopback: replication, forwarding, reads, failover, restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from raft_cluster import Cluster

from plasmacloud.raft.api import NotLeaderError, RaftStatus


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        await c.start_all()
        yield c
    finally:
        await c.stop_all()


async def _converged(c: Cluster, index: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while any(n.applied_index < index for n in c.nodes.values()):
            await asyncio.sleep(0.02)


async def test_propose_on_leader_and_follower_and_read_index(cluster: Cluster) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    i1 = await leader.propose(b"on-leader")
    i2 = await follower.propose(b"via-follower")
    assert i2 > i1
    # the follower returns its own apply result, so the command is applied there already
    assert cluster.sms[follower.id].applied[i2] == b"via-follower"
    i3 = await leader.propose(b"later")
    await follower.read_index()
    assert cluster.sms[follower.id].applied[i3] == b"later"
    results = await asyncio.gather(*(follower.propose(b"c%d" % k) for k in range(50)))
    assert len(set(results)) == 50
    await _converged(cluster, max(results))
    logs = {n: sm.commands() for n, sm in cluster.sms.items()}
    assert logs["n1"] == logs["n2"] == logs["n3"]
    status = leader.status()
    assert isinstance(status, RaftStatus) and status.role == "leader"
    assert {m.node_id for m in status.members} == {"n1", "n2", "n3"}


async def test_leader_failover_and_restart_replays(cluster: Cluster) -> None:
    leader = await cluster.leader()
    changes: list[tuple[str | None, int]] = []
    survivor = next(n for n in cluster.nodes.values() if n is not leader)
    survivor.add_leader_listener(lambda lid, term: changes.append((lid, term)))
    acked = [await leader.propose(b"k%d" % k) for k in range(20)]
    old = leader.id
    await cluster.stop(old)
    new_leader = await cluster.leader()
    assert new_leader.id != old
    assert changes and changes[-1] == (new_leader.id, new_leader.term)
    acked.append(await new_leader.propose(b"after-failover"))
    restarted = await cluster.start(old)
    await restarted.read_index()
    cmds = cluster.sms[old].commands()
    assert b"after-failover" in cmds and [b"k%d" % k for k in range(20)] == cmds[:20]
    with pytest.raises(NotLeaderError):
        await next(n for n in cluster.nodes.values() if not n.is_leader).add_member("x", "h:1")
