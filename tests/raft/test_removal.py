"""Knowing this node was removed (raft.removal): a joining node is not a removed one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from plasmacloud.raft import removal
from plasmacloud.raft.api import Member, RaftStatus


@dataclass
class FakeRaft:
    """Just what the removal check reads: members and the known leader."""

    members: list[str] = field(default_factory=list)
    leader_id: str | None = None

    def status(self) -> RaftStatus:
        return RaftStatus(
            "n4",
            "follower",
            1,
            self.leader_id,
            0,
            0,
            0,
            0,
            tuple(Member(m, "") for m in self.members),
        )


@pytest.fixture(autouse=True)
def fast_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(removal, "CHECK_INTERVAL_S", 0.01)
    monkeypatch.setattr(removal, "LEADERLESS_S", 0.02)


async def others_without_n4(_peer: str) -> Sequence[str]:
    return ["n1", "n2", "n3"]


async def test_a_node_waiting_to_be_added_is_not_taken_for_removed() -> None:
    raft = FakeRaft()  # bootstrap false: no members yet, no leader, peers do not list it
    check = asyncio.ensure_future(
        removal.wait_until_removed(raft, "n4", ["n1"], others_without_n4)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.3)
    assert not check.done()
    raft.members, raft.leader_id = ["n1", "n2", "n3", "n4"], "n1"  # added
    await asyncio.sleep(0.1)
    assert not check.done()
    raft.members = ["n1", "n2", "n3"]  # then removed again
    reason = await asyncio.wait_for(check, 5)
    assert "without itself" in reason


async def test_a_member_that_lost_its_leader_asks_the_others() -> None:
    raft = FakeRaft(["n1", "n2", "n3", "n4"])  # it never sees its removal committed
    reason = await asyncio.wait_for(
        removal.wait_until_removed(raft, "n4", ["n1"], others_without_n4),  # type: ignore[arg-type]
        5,
    )
    assert reason.startswith("n1 lists the members")


async def test_a_member_removed_before_the_first_check_still_learns_it() -> None:
    raft = FakeRaft(["n1", "n2", "n4"], "n4")  # it leads, then commits its own removal
    check = asyncio.ensure_future(
        removal.wait_until_removed(raft, "n4", ["n1"], others_without_n4)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0)  # the check has begun (as the service starts it), not checked yet
    raft.members = ["n1", "n2"]
    assert "without itself" in await asyncio.wait_for(check, 5)
