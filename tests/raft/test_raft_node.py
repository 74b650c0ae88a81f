"""Three real RaftNodes on loopback: replication, forwarding, reads, failover, restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry
from raft_cluster import Cluster

from plasmacloud.common.config import TLSConfig
from plasmacloud.common.tls import client_context, server_context
from plasmacloud.provision import pki
from plasmacloud.raft.api import (
    LeaderLostError,
    NoLeaderError,
    ProposalTimeoutError,
    RaftStatus,
    ShutdownError,
)
from plasmacloud.raft.codec import Heartbeat, encode_frame
from plasmacloud.raft.memory import MemoryStateMachine
from plasmacloud.raft.node import RaftNode

T = TypeVar("T")


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
    await survivor.read_index()  # it has heard from the new leader
    assert changes and changes[-1] == (new_leader.id, new_leader.term)
    acked.append(await new_leader.propose(b"after-failover"))
    restarted = await cluster.start(old)
    await restarted.read_index()
    cmds = cluster.sms[old].commands()
    assert b"after-failover" in cmds and [b"k%d" % k for k in range(20)] == cmds[:20]


async def test_a_forward_to_a_leader_that_died_fails_when_a_new_leader_is_known(
    cluster: Cluster,
) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    await follower.propose(b"before")
    await cluster.nodes.pop(leader.id).stop(handover=False)  # as if its machine died
    assert follower.leader_id == leader.id  # not noticed yet: the put is forwarded to it
    # the dead leader never answers; the caller learns "outcome unknown" as soon as the
    # follower gives that leader up (it campaigns), not at the end of its deadline
    with pytest.raises(LeaderLostError):
        await follower.propose(b"to-the-dead-leader", timeout=30)
    await follower.propose(b"after")  # the next request goes to the new leader


async def test_lagging_follower_catches_up_via_snapshot(tmp_path: Path) -> None:
    c = Cluster(tmp_path, snapshot_threshold=40)
    try:
        await c.start_all()
        leader = await c.leader()
        lagger = next(n for n in c.nodes if n != leader.id)
        await c.stop(lagger)
        await asyncio.gather(*(leader.propose(b"v%d" % k) for k in range(150)))
        async with asyncio.timeout(10):
            while leader.status().snapshot_index < 40:  # compaction happened
                await asyncio.sleep(0.02)
        node = await c.start(lagger)
        await node.read_index()
        sm = c.sms[lagger]
        assert sm.base_index >= 40  # restored from the leader's snapshot, not replayed
        assert sorted(sm.commands()) == sorted(b"v%d" % k for k in range(150))
        assert node.status().snapshot_index >= 40
    finally:
        await c.stop_all()


class SlowSnapshots(MemoryStateMachine):
    """Reading its state out takes several election timeouts, as a large database does."""

    def snapshot_reader(self) -> Callable[[], bytes]:
        read = super().snapshot_reader()

        def slowly() -> bytes:
            time.sleep(1.5)
            return read()

        return slowly


class LoopThread:
    """An event loop of its own on a thread: a node whose loop stalls goes quiet to the
    others, as a separate process would (nodes sharing one loop would stall together)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_snapshot_points_under_writes_cause_no_election(tmp_path: Path) -> None:
    c = Cluster(tmp_path, snapshot_threshold=20, state_machine=SlowSnapshots)
    loops = {node_id: LoopThread() for node_id in c.members}
    changes: list[tuple[str | None, int]] = []
    try:
        for node_id, thread in loops.items():
            thread.run(c.start(node_id))
        deadline = time.monotonic() + 30
        while not (leaders := [n for n in c.nodes.values() if n.is_leader]):
            assert time.monotonic() < deadline, "no leader elected"
            time.sleep(0.05)
        leader, term = leaders[0], leaders[0].term
        for node in c.nodes.values():
            node.add_leader_listener(lambda lid, t: changes.append((lid, t)))
        put = loops[leader.id]
        for k in range(70):
            put.run(leader.propose(b"k%d" % k))
        # three snapshot points on every node, each read for 1.5 s while writes go on
        while any(n.status().snapshot_index < 60 for n in c.nodes.values()):
            assert time.monotonic() < deadline + 30, "snapshots did not complete"
            put.run(leader.propose(b"more"))
            time.sleep(0.1)
        assert changes == [] and leader.is_leader and leader.term == term
        assert c.sms[leader.id].commands()[:70] == [b"k%d" % k for k in range(70)]
    finally:
        for node_id, thread in loops.items():
            if node_id in c.nodes:
                thread.run(c.stop(node_id))
            thread.close()


async def test_membership_add_and_remove_leader(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        await c.start_all()
        leader = await c.leader()
        await leader.propose(b"before-join")
        address = c.reserve("n4")
        joiner = await c.start("n4", bootstrap=False)
        follower = next(n for n in c.nodes.values() if n.id not in (leader.id, "n4"))
        await follower.add_member("n4", address)  # forwarded to the leader
        assert set(leader.status().members and {m.node_id for m in leader.status().members}) == {
            "n1",
            "n2",
            "n3",
            "n4",
        }
        await joiner.propose(b"from-joiner")
        assert c.sms["n4"].commands() == [b"before-join", b"from-joiner"]
        old = leader.id
        await leader.remove_member(old)
        async with asyncio.timeout(10):
            while leader.is_leader:  # a removed leader steps down once the change commits
                await asyncio.sleep(0.02)
        await c.stop(old)
        new_leader = await c.leader()
        assert old not in {m.node_id for m in new_leader.status().members}
        await new_leader.propose(b"after-removal")
        await joiner.read_index()
        assert c.sms["n4"].commands()[-1] == b"after-removal"
    finally:
        await c.stop_all()


async def test_garbage_on_the_peer_port_closes_only_that_connection(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    leader = await cluster.leader()
    host, port = cluster.addresses[leader.id].rsplit(":", 1)
    bad_inputs = [
        b"GET / HTTP/1.1\r\n\r\n" + b"\x00" * 64,  # garbage: CRC or decode failure
        struct.pack("<II", 1 << 31, 0),  # oversized frame header
        struct.pack("<II", 100, 0) + b"x" * 10,  # truncated frame, then EOF
    ]
    with caplog.at_level(logging.WARNING, logger="plasmacloud.raft"):
        for payload in bad_inputs:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the node hung up on us
            writer.close()
    assert "bad frame" in caplog.text and "truncated frame" in caplog.text
    assert "exceeds the limit" in caplog.text
    assert leader.is_leader
    assert await leader.propose(b"still-fine") > 0


async def test_mtls_cluster_and_untrusted_client_rejected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = Cluster(tmp_path)
    ips = [a.rsplit(":", 1)[0] for a in c.members.values()]
    issued = pki.issue_node(pki.init_ca(tmp_path / "pki"), tmp_path / "pki", "node", [], ips)
    tls = TLSConfig(
        enabled=True,
        ca_file=issued.ca_path,
        cert_file=issued.cert_path,
        key_file=issued.key_path,
        client_cert_auth=True,
    )
    c.server_ssl, c.client_ssl = server_context(tls), client_context(tls)
    try:
        await c.start_all()
        leader = await c.leader()
        follower = next(n for n in c.nodes.values() if n is not leader)
        assert await follower.propose(b"over-mtls") > 0
        await follower.read_index()
        assert c.sms[follower.id].commands() == [b"over-mtls"]
        # a client without a certificate from our CA cannot talk to the peer port: its
        # (well-formed) heartbeat from a far-future term would otherwise depose the leader
        host, port = c.addresses[leader.id].rsplit(":", 1)
        stranger = ssl.create_default_context()
        stranger.check_hostname = False
        stranger.verify_mode = ssl.CERT_NONE
        term = leader.term
        intrusion = encode_frame(Heartbeat(term + 100, "intruder", 0, 1))
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            reader, writer = await asyncio.open_connection(host, int(port), ssl=stranger)
            writer.write(intrusion)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        assert leader.is_leader and leader.term == term
        assert await leader.propose(b"still-fine") > 0
    finally:
        await c.stop_all()


async def test_single_node_cluster_and_metrics(tmp_path: Path) -> None:
    c = Cluster(tmp_path, size=1)
    registry = CollectorRegistry()
    sm = MemoryStateMachine()
    config = dataclasses.replace(c.config("n1"), registry=registry, snapshot_threshold=4)
    node = RaftNode(config, sm)
    await node.start()
    try:
        await node.wait_for_leader()
        results = await asyncio.gather(*(node.propose(b"m%d" % k) for k in range(10)))
        await node.read_index()
        assert len(set(results)) == 10 and len(sm.commands()) == 10

        def metric(name: str) -> float | None:
            return registry.get_sample_value(name)

        assert metric("raft_is_leader") == 1
        assert metric("raft_term") == node.term >= 1
        assert metric("raft_proposals_committed_total") == 10
        assert metric("raft_proposals_pending") == 0
        assert metric("raft_leader_changes_total") == 1
        assert metric("raft_commit_index") == metric("raft_applied_index") == node.commit_index
        assert (metric("raft_fsync_duration_seconds_count") or 0) >= 1
        assert (metric("raft_apply_duration_seconds_count") or 0) >= 1
        async with asyncio.timeout(10):  # the snapshot is written off the loop
            while not metric("raft_snapshots_total"):
                await asyncio.sleep(0.01)
        assert 4 <= (metric("raft_snapshot_index") or 0) <= node.commit_index
        with pytest.raises(ProposalTimeoutError):
            await node.propose(b"x", timeout=0)
        assert metric("raft_proposals_failed_total") == 1
    finally:
        await node.stop()
    with pytest.raises(ShutdownError):
        await node.propose(b"after-stop")


async def test_leader_without_a_majority_steps_down(cluster: Cluster) -> None:
    leader = await cluster.leader()
    seen: list[tuple[str | None, int]] = []
    leader.add_leader_listener(lambda lid, term: seen.append((lid, term)))
    for node_id in [n for n in cluster.nodes if n != leader.id]:
        await cluster.stop(node_id)
    async with asyncio.timeout(10):  # check-quorum: one election timeout without a majority
        while leader.is_leader:
            await asyncio.sleep(0.02)
    assert seen and seen[-1][0] is None
    with pytest.raises(NoLeaderError):
        await leader.propose(b"no-quorum", timeout=0.5)


async def test_leadership_transfer_and_graceful_stop(cluster: Cluster) -> None:
    leader = await cluster.leader()
    await leader.propose(b"before")
    term = leader.term
    new_id = await leader.transfer_leadership(timeout=10)
    assert new_id is not None and new_id != leader.id and not leader.is_leader
    new = cluster.nodes[new_id]
    assert new.is_leader and new.term == term + 1  # one campaign, no failed elections
    await new.propose(b"after-transfer")
    await cluster.stop(new_id)  # a stopping leader hands over first
    third = await cluster.leader()
    await third.propose(b"after-stop")
    assert cluster.sms[third.id].commands() == [b"before", b"after-transfer", b"after-stop"]
