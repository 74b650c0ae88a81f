"""The TCP transport: peers named by hostname resolve through the config, and a name that
does not resolve is reported (the seed's cluster failed exactly there)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from raft_cluster import Cluster

from plasmacloud.raft.codec import Heartbeat, Message
from plasmacloud.raft.memory import MemoryStateMachine
from plasmacloud.raft.node import RaftNode
from plasmacloud.raft.transport import TcpTransport


async def test_peers_named_by_hostname_resolve_through_the_config(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    ips = {n: a.rsplit(":", 1)[0] for n, a in c.members.items()}
    hosts = {f"{n}.cluster.invalid": ip for n, ip in ips.items()}  # .invalid never resolves
    named = {n: f"{n}.cluster.invalid:{a.rsplit(':', 1)[1]}" for n, a in c.members.items()}
    nodes = []
    for node_id in named:
        cfg = c.config(node_id)
        cfg.members = named
        cfg.resolve = hosts.__getitem__
        nodes.append(RaftNode(cfg, MemoryStateMachine()))
    try:
        for n in nodes:
            await n.start()
        leader_id = await nodes[0].wait_for_leader()
        follower = next(n for n in nodes if n.id != leader_id)
        assert await follower.propose(b"by-name") > 0
    finally:
        for n in nodes:
            await n.stop()


async def test_unresolvable_peer_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    def resolve(host: str) -> str:
        raise ValueError(f"cannot resolve {host!r}: not in the config's hosts map")

    received: list[Message] = []
    t = TcpTransport("a", "127.0.0.1", 0, resolve=resolve)
    await t.start(received.append)
    try:
        with caplog.at_level(logging.WARNING, logger="plasmacloud.raft"):
            t.update_peers({"b": "node02:2380"})
            t.send("b", Heartbeat(1, "a", 0, 0))  # dropped: nothing to send it on
            async with asyncio.timeout(5):
                while "cannot resolve 'node02'" not in caplog.text:
                    await asyncio.sleep(0.01)
        assert "cannot connect to peer b at node02:2380" in caplog.text
    finally:
        await t.stop()
