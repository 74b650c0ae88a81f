"""The contract between the Raft engine and the services built on it.

Chainfire and FlareDB import only this module (and ``RaftNode`` from
``plasmacloud.raft.node``); everything else in ``plasmacloud.raft`` is the engine's own
business. A service hands the engine a :class:`StateMachine`; the engine replicates
opaque command bytes, and calls ``apply`` on every node in log order once they are
committed (fsynced on a majority).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    """A committed log entry handed to the state machine."""

    index: int
    term: int
    data: bytes


class StateMachine(Protocol):
    """What a service implements; the engine drives it.

    ``apply`` must be deterministic: the same entries in the same order produce the same
    state and results on every node. It is called with consecutive committed entries
    (a whole batch at a time, so the service can use one transaction per batch) and
    returns one result per entry; the node that proposed an entry hands that result back
    to the caller of :meth:`RaftNode.propose`, and a follower that forwarded a proposal
    gets the result of applying the entry locally.

    The engine's own log entries (the no-op a new leader appends, membership changes) are
    never passed to ``apply``: a batch holds only proposed commands, so ``Entry.index``
    values may skip numbers. ``restore`` is called (with the snapshot's index) when the
    engine starts and ``applied_index()`` is behind its latest snapshot, or when a lagging
    follower receives a snapshot from the leader. ``apply`` must not raise for a bad
    command (return an error result instead): an exception is logged and the engine retries
    the same batch, so this node's state machine stops advancing until it is fixed.
    """

    def apply(self, entries: Sequence[Entry]) -> list[Any]: ...

    def applied_index(self) -> int:
        """Index of the last entry whose effects are durable in the service's own storage.

        A state machine that persists itself (SQLite with the index stored in the same
        transaction) returns that index after a restart and the engine replays only the
        entries after it; an in-memory one returns 0 and is rebuilt from snapshot + log.
        """
        ...

    def snapshot(self) -> bytes:
        """The whole state as of the last applied entry (the engine records index/term)."""
        ...

    def snapshot_reader(self) -> Callable[[], bytes]:
        """Pin the state as of the last applied entry and return a function that reads it
        out (what :meth:`snapshot` would have returned now). The engine pins right after
        an apply, on its loop, so this must be cheap; it runs the function on a worker
        thread while applies go on, so a large state never holds up heartbeats."""
        ...

    def restore(self, data: bytes, index: int) -> None:
        """Replace the whole state with a snapshot taken at ``index``."""
        ...


class RaftError(Exception):
    """Base class of the errors the engine raises to services."""


class NotLeaderError(RaftError):
    """This node cannot serve the request; ``leader_id`` names the leader if known."""

    def __init__(self, leader_id: str | None, leader_address: str | None = None) -> None:
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id
        self.leader_address = leader_address


class NoLeaderError(RaftError):
    """No leader is known (election in progress or no quorum); clients should retry."""


class ProposalDroppedError(RaftError):
    """The entry was lost to a leader change before it committed; it may be retried."""


class ProposalTimeoutError(RaftError):
    """The proposal did not commit in time; its outcome is unknown."""


class LeaderLostError(ProposalTimeoutError):
    """The leader a follower forwarded the request to was replaced before it answered; the
    outcome is unknown (that leader may have appended it), but known now rather than at the
    deadline, as etcd's "request timed out, possibly due to previous leader failure"."""


class ShutdownError(RaftError):
    """The node is stopping."""


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    address: str  # "host:port" of the peer (Raft) port


@dataclass(frozen=True, slots=True)
class RaftStatus:
    node_id: str
    role: str  # "leader" | "follower" | "candidate" | "precandidate"
    term: int
    leader_id: str | None
    commit_index: int
    applied_index: int
    last_log_index: int
    snapshot_index: int
    members: tuple[Member, ...] = field(default_factory=tuple)


class Consensus(Protocol):
    """What a service asks of its Raft node (:class:`plasmacloud.raft.node.RaftNode`)."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader_id(self) -> str | None: ...

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any: ...

    async def read_index(self, timeout: float = 5.0) -> Any: ...

    async def add_member(self, node_id: str, address: str, timeout: float = 10.0) -> None:
        """Add one server reachable at ``address`` (callable on any member); returns once
        the change is committed."""
        ...

    async def remove_member(self, node_id: str, timeout: float = 10.0) -> None:
        """Take one server out of the group (callable on any member); returns once the
        change is committed."""
        ...

    def status(self) -> RaftStatus: ...
