"""Targeted scenarios on the simulated network (virtual time, so they are fast and exact)."""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from plasmacloud.raft.api import Entry, ProposalTimeoutError, ShutdownError
from plasmacloud.raft.memory import MemoryStateMachine
from plasmacloud.raft.node import RaftConfig, RaftNode
from plasmacloud.raft.sim import SimDisk, SimLoop, SimMount, SimNetwork, SimTransport

IDS = ["n1", "n2", "n3"]


class FailingMount(SimMount):
    """A disk whose fdatasync starts failing (EIO) when told to."""

    fail = False

    async def datasync(self, files: Sequence[Any]) -> None:
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")
        await super().datasync(files)


def _run(scenario: Callable[[SimNetwork, dict[str, RaftNode]], Awaitable[None]]) -> None:
    rng = random.Random(42)
    net = SimNetwork(random.Random(1), delay=(0.001, 0.005))
    nodes = {
        n: RaftNode(
            RaftConfig(n, Path(f"/sim/{n}"), "sim", 0, {i: f"sim:{i}" for i in IDS}),
            MemoryStateMachine(),
            transport=SimTransport(net, n),
            disk=FailingMount(SimDisk(random.Random(rng.random()), (0.0005, 0.002))),
            rng=random.Random(rng.random()),
        )
        for n in IDS
    }

    async def main() -> None:
        for node in nodes.values():
            await node.start()
        try:
            await scenario(net, nodes)
        finally:
            for node in nodes.values():
                await node.stop()

    loop = SimLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_rejoining_node_does_not_depose_a_healthy_leader() -> None:
    """Pre-vote: a node cut off for many election timeouts comes back without bumping the
    term (without pre-vote it would return with a higher term and force an election)."""

    async def scenario(net: SimNetwork, nodes: dict[str, RaftNode]) -> None:
        leader_id = await nodes["n1"].wait_for_leader()
        leader = nodes[leader_id]
        term = leader.term
        loner = next(n for n in IDS if n != leader_id)
        net.partition([loner], IDS)
        await asyncio.sleep(5.0)  # ~10 election timeouts alone
        assert nodes[loner].term == term  # pre-votes failed: the term never moved
        net.heal()
        await asyncio.sleep(2.0)
        assert leader.is_leader and leader.term == term
        await nodes[loner].read_index()
        assert nodes[loner].leader_id == leader_id

    _run(scenario)


def test_partitioned_leader_steps_down_and_majority_elects() -> None:
    async def scenario(net: SimNetwork, nodes: dict[str, RaftNode]) -> None:
        old_id = await nodes["n1"].wait_for_leader()
        old = nodes[old_id]
        await old.propose(b"before")
        net.partition([old_id], IDS)
        await asyncio.sleep(2.0)
        assert not old.is_leader  # check-quorum
        new = next(n for n in nodes.values() if n.is_leader)
        assert new.id != old_id and new.term > old.term
        await new.propose(b"during")
        net.heal()
        await old.read_index()
        assert old.sm.commands() == [b"before", b"during"]  # type: ignore[attr-defined]

    _run(scenario)


def test_fsync_failure_stops_the_node_and_the_rest_carry_on() -> None:
    """fsync errors are not retryable (the kernel may have dropped the dirty pages): the node
    must stop rather than acknowledge entries that may not be on its disk."""

    async def scenario(net: SimNetwork, nodes: dict[str, RaftNode]) -> None:
        leader_id = await nodes["n1"].wait_for_leader()
        await nodes[leader_id].propose(b"ok")
        victim = nodes[leader_id]
        disk = victim._storage.disk
        assert isinstance(disk, FailingMount)
        disk.fail = True
        with pytest.raises((ShutdownError, ProposalTimeoutError)):
            await victim.propose(b"lost?", timeout=2.0)
        await asyncio.sleep(0.5)
        with pytest.raises(ShutdownError):
            await victim.propose(b"after")
        others = [n for n in nodes.values() if n is not victim]
        await asyncio.sleep(2.0)
        new = next(n for n in others if n.is_leader)
        await new.propose(b"later")
        assert b"later" in new.sm.commands()  # type: ignore[attr-defined]

    _run(scenario)


class RaisingStateMachine(MemoryStateMachine):
    """A state machine with a bug: it raises on one command instead of answering it."""

    def apply(self, entries: Sequence[Entry]) -> list[int]:
        if any(e.data == b"boom" for e in entries):
            raise RuntimeError("bug in apply")
        return super().apply(entries)


def test_a_state_machine_that_raises_stops_its_node_and_the_rest_carry_on() -> None:
    """Retrying the same entries would raise forever while every write waited silently:
    the node stops where it shows (ShutdownError, no longer a member that answers)."""

    async def scenario(net: SimNetwork, nodes: dict[str, RaftNode]) -> None:
        leader_id = await nodes["n1"].wait_for_leader()
        leader = nodes[leader_id]
        victim = nodes[next(n for n in IDS if n != leader_id)]
        victim.sm = RaisingStateMachine()
        await leader.propose(b"boom")
        await asyncio.sleep(1.0)
        with pytest.raises(ShutdownError):
            await victim.read_index()
        await leader.propose(b"after")
        assert b"after" in leader.sm.commands()  # type: ignore[attr-defined]

    _run(scenario)
