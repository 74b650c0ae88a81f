"""The Raft consensus rules as a pure state machine, in the style of etcd's raft library.

:class:`RaftCore` holds one node's Raft state and changes it only through its inputs:

* :meth:`RaftCore.step` — a message from a peer;
* :meth:`RaftCore.tick` — one heartbeat interval passed (the core never reads a clock: every
  timeout is a number of ticks);
* :meth:`RaftCore.append_proposals`, :meth:`RaftCore.read_index`,
  :meth:`RaftCore.transfer_step` — requests from the local node;
* :meth:`RaftCore.synced` / :meth:`RaftCore.applied_to` / :meth:`RaftCore.compact` — the
  driver reporting that the log is durable up to N, applied up to N, snapshotted at N.

Each input queues its effects in a :class:`Ready` that the driver takes with
:meth:`RaftCore.ready`: the hard state to save, log writes (in order), messages to send,
leader changes, answered reads. The driver saves the hard state and writes the log before
sending the messages, then applies :meth:`RaftCore.committed_batch`. No asyncio, no I/O, no
randomness except the injected ``rng`` (election timeouts), so the same inputs always give
the same outputs.

The safety rules, with the sections of the Raft paper (and Ongaro's thesis) they implement:

* §5.1 terms: a message with a higher term turns this node into a follower of that term;
  one with a lower term is refused (:meth:`RaftCore.step`).
* §5.2 leader election, with pre-vote and check-quorum (thesis 9.6): :meth:`_start_prevote`,
  :meth:`_become_candidate`, :meth:`_on_vote_resp`, :meth:`_check_quorum`, :meth:`_in_lease`.
* §5.3 log matching: :meth:`_on_append` (consistency check on prev index/term, truncating a
  conflicting suffix that is never committed).
* §5.4.1 election restriction: :meth:`_log_ok` (a vote only for a log at least as
  up-to-date).
* §5.4.2 commit only entries of the current term by counting replicas: :meth:`_maybe_commit`.
* §6 (thesis 4.1) single-server membership changes, in effect once in the log:
  :meth:`_apply_config`, one at a time (:meth:`append_proposals`).
* §7 snapshots: :meth:`_on_snapshot_chunk`, :meth:`_install_snapshot`, :meth:`compact`.
* §8 / thesis 6.4 ReadIndex: :meth:`read_index` and :meth:`_resolve_reads` (a read is served
  at the commit index once a heartbeat round started after it reached a majority).
* Thesis 3.10 leadership transfer: :meth:`transfer_step`, :meth:`_on_timeout_now`.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from plasmacloud.raft.codec import (
    CONFIG,
    ERR_INVALID,
    ERR_NONE,
    NOOP,
    NORMAL,
    AppendEntries,
    AppendResp,
    HardState,
    Heartbeat,
    HeartbeatResp,
    LogEntry,
    Message,
    Propose,
    ProposeResp,
    SnapshotChunk,
    SnapshotMeta,
    SnapshotResp,
    TimeoutNow,
    VoteReq,
    VoteResp,
    decode_members,
)

log = logging.getLogger(__name__)

FOLLOWER = "follower"
PRECANDIDATE = "precandidate"
CANDIDATE = "candidate"
LEADER = "leader"

MAX_INFLIGHT = 32  # AppendEntries per follower sent but not yet acknowledged
MAX_BATCH_ENTRIES = 4096
MAX_BATCH_BYTES = 4 * 1024 * 1024
# proposal batches a leader has appended but not yet committed; proposals arriving meanwhile
# wait and go out together once the oldest commits (every batch costs each member messages,
# an fdatasync and an apply transaction, so many small batches cost far more CPU than a few
# large ones; a lone proposal never waits)
MAX_PROPOSAL_BATCHES = 2
COMMIT_ONLY_SEQ = 0  # heartbeat seq of a commit notification: no answer (periodic ones are >= 1)
APPLY_BATCH = 4096
SNAPSHOT_CHUNK = 1024 * 1024


# --- what the core asks of its driver ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Append:
    """Write these entries (which continue the log) to storage; sync them later."""

    entries: list[LogEntry]


@dataclass(frozen=True, slots=True)
class Truncate:
    """Remove the stored entries from ``index`` on (they conflict with the leader's)."""

    index: int


@dataclass(frozen=True, slots=True)
class Install:
    """Store this snapshot from the leader and restore the state machine from it; the log
    is compacted up to it (``keep_log``) or replaced by it."""

    meta: SnapshotMeta
    data: bytes
    keep_log: bool


LogWrite = Append | Truncate | Install


@dataclass(slots=True)
class Ready:
    """Everything one or more inputs asked for, in the order the driver must do it:
    hard state, then log writes, then messages (a vote or an acknowledgement is only sent
    once what it promises is on disk)."""

    hard_state: HardState | None = None
    log_writes: list[LogWrite] = field(default_factory=list)
    messages: list[tuple[str, Message]] = field(default_factory=list)
    leader_changes: list[tuple[str | None, int]] = field(default_factory=list)  # (leader, term)
    read_states: list[tuple[Any, int]] = field(default_factory=list)  # (read context, index)
    failed_reads: list[Any] = field(default_factory=list)  # contexts: leadership was lost
    snapshots_wanted: list[str] = field(default_factory=list)  # peers to send the stored one
    members_changed: bool = False
    commit_advanced: bool = False
    stepped_down: bool = False  # this leader became a follower
    read_round_due: bool = False  # reads wait for a heartbeat round the driver should start

    def __bool__(self) -> bool:
        return bool(
            self.hard_state is not None
            or self.log_writes
            or self.messages
            or self.leader_changes
            or self.read_states
            or self.failed_reads
            or self.snapshots_wanted
            or self.members_changed
            or self.commit_advanced
            or self.stepped_down
            or self.read_round_due
        )


# --- leader bookkeeping --------------------------------------------------------------------


@dataclass(slots=True)
class SnapSend:
    meta: SnapshotMeta
    data: bytes
    offset: int = 0
    last_sent: int = 0  # tick


@dataclass(slots=True)
class Progress:
    """The leader's view of one follower."""

    next_index: int
    match: int = 0
    probe: bool = True  # unsure where the follower's log ends: one AppendEntries at a time
    inflight: deque[int] = field(default_factory=deque)  # last index of each unacked append
    last_progress: int = 0  # tick
    active: bool = False  # responded since the last check-quorum
    hb_seq: int = 0  # highest heartbeat sequence acknowledged (ReadIndex)
    snap: SnapSend | None = None
    commit_sent: int = 0  # highest commit index told to this follower


def election_ticks(timeout: tuple[float, float], heartbeat: float) -> tuple[int, int]:
    """An election timeout range in seconds as heartbeat ticks (at least one)."""
    lo = max(1, round(timeout[0] / heartbeat))
    return lo, max(lo, round(timeout[1] / heartbeat))


class RaftCore:
    """The state and rules of one Raft member; see the module docstring."""

    def __init__(
        self,
        node_id: str,
        *,
        election_ticks: tuple[int, int],
        rng: random.Random,
        snapshot_chunk: int = SNAPSHOT_CHUNK,
    ) -> None:
        self.id = node_id
        self.election_ticks = election_ticks
        self._rng = rng
        self.snapshot_chunk = snapshot_chunk

        # persistent state (mirrored in storage through Ready)
        self.term = 0
        self.voted_for = ""
        self.log: list[LogEntry] = []  # entries snap_index+1 .. last_index
        self.snap_index = 0
        self.snap_term = 0
        self.configs: list[tuple[int, dict[str, str]]] = [(0, {})]  # (index, members) history

        # volatile state
        self.role = FOLLOWER
        self.leader_id: str | None = None
        self.commit_index = 0
        self.applied_index = 0
        self.durable = 0  # entries <= this are fsynced (and not truncated since)
        self._trunc_floor: int | None = None  # lowest truncation during an in-flight sync
        self._clock = 0  # ticks since start
        self._election_elapsed = 0
        self._election_timeout = election_ticks[0]
        self._last_leader_contact = -(10**9)  # tick
        self._votes: set[str] = set()
        self._pending_ack: tuple[str, int, int] | None = None  # (leader, term, match)
        self._snap_recv: tuple[int, int, bytearray] | None = None
        self.local_snapshot_in_progress = False  # set by the driver while it writes one

        # leader state
        self.progress: dict[str, Progress] = {}
        self.term_start = 0  # index of this leader's no-op entry
        self._hb_seq = 0
        self._reads: list[tuple[int, int, Any]] = []  # (heartbeat seq needed, index, context)
        self._reads_before_commit: list[Any] = []  # contexts waiting for the term's no-op
        self._last_quorum_check = 0
        self._batch_ends: deque[int] = deque()  # last index of each uncommitted batch

        self._rd = Ready()

    # --- recovery ----------------------------------------------------------------------

    def load(self, hs: HardState, snapshot: SnapshotMeta | None, entries: list[LogEntry]) -> None:
        """Take the state recovered from storage (before :meth:`start`)."""
        self.term, self.voted_for = hs.term, hs.vote
        if snapshot is not None:
            self.snap_index, self.snap_term = snapshot.index, snapshot.term
            self.configs = [(snapshot.index, snapshot.members)]
        else:
            self.configs = [(0, hs.members)]
        self.log = entries
        for e in entries:
            if e.kind == CONFIG:
                self.configs.append((e.index, decode_members(e.data)[0]))

    def start(self, applied: int) -> None:
        """Everything loaded is durable; the state machine has applied up to ``applied``."""
        self.durable = self.last_index
        self.applied_index = applied
        self.commit_index = applied
        self._reset_election_timer()

    # --- log helpers -------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self.log)

    def term_at(self, index: int) -> int | None:
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index:
            return None
        return self.log[index - self.snap_index - 1].term

    @property
    def members(self) -> dict[str, str]:
        return self.configs[-1][1]

    def members_at(self, index: int) -> dict[str, str]:
        for cidx, members in reversed(self.configs):
            if cidx <= index:
                return members
        return self.configs[0][1]

    @property
    def config_index(self) -> int:
        """Index of the latest membership configuration."""
        return self.configs[-1][0]

    def _peers(self) -> list[str]:
        return [n for n in self.members if n != self.id]

    def _quorum(self) -> int:
        return len(self.members) // 2 + 1

    # --- output ------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self._rd)

    def ready(self) -> Ready:
        """Take what the inputs so far asked for (see :class:`Ready`)."""
        rd, self._rd = self._rd, Ready()
        return rd

    def _send(self, to: str, msg: Message) -> None:
        self._rd.messages.append((to, msg))

    def _persist(self) -> None:
        self._rd.hard_state = HardState(self.term, self.voted_for, self.configs[0][1])

    # --- time --------------------------------------------------------------------------

    def _reset_election_timer(self) -> None:
        lo, hi = self.election_ticks
        self._election_elapsed = 0
        self._election_timeout = self._rng.randint(lo, hi)

    def tick(self) -> None:
        """One heartbeat interval passed."""
        self._clock += 1
        if self.role == LEADER:
            self.broadcast_heartbeat()
            for peer, pr in self.progress.items():
                self._tick_peer(peer, pr)
            if self._clock - self._last_quorum_check >= self.election_ticks[0]:
                self._check_quorum()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._election_timeout:
            if self.id in self.members:
                self._start_prevote()
            else:
                self._reset_election_timer()

    def _tick_peer(self, peer: str, pr: Progress) -> None:
        if pr.snap is not None:
            if self._clock - pr.snap.last_sent > self.election_ticks[0] // 2:
                self._send_snapshot_chunk(peer, pr)
            return
        if pr.probe:
            pr.inflight.clear()  # re-send the probe each tick until answered
            self._send_appends(peer, pr)
        elif pr.inflight and self._clock - pr.last_progress > self.election_ticks[0]:
            log.info("%s: no progress from %s; probing from %d", self.id, peer, pr.match + 1)
            self._to_probe(pr, pr.match + 1)
            self._send_appends(peer, pr)

    def _check_quorum(self) -> None:
        """Check-quorum (thesis 6.2): a leader that has not heard from a majority for an
        election timeout steps down, so a partitioned leader stops serving reads."""
        self._last_quorum_check = self._clock
        active = sum(1 for p in self._peers() if self.progress[p].active)
        if self.id in self.members:
            active += 1
        for pr in self.progress.values():
            pr.active = False
        if active < self._quorum():
            log.warning("%s: lost contact with the majority; stepping down", self.id)
            self._become_follower(self.term, None)

    def _in_lease(self) -> bool:
        """Heard from a live leader recently: votes for a disruptive candidate are refused
        (thesis 4.2.3)."""
        if self.role == LEADER:
            return True
        recent = self._clock - self._last_leader_contact < self.election_ticks[0]
        return self.leader_id is not None and recent

    # --- roles -------------------------------------------------------------------------

    def _set_leader(self, leader: str | None) -> None:
        if leader != self.leader_id:
            self.leader_id = leader
            self._rd.leader_changes.append((leader, self.term))

    def _become_follower(self, term: int, leader: str | None) -> None:
        was_leader = self.role == LEADER
        if term > self.term:
            self.term = term
            self.voted_for = ""
            self._persist()
        self.role = FOLLOWER
        if was_leader:
            self.progress.clear()
            self._batch_ends.clear()
            self._rd.stepped_down = True
            self._rd.failed_reads.extend(self.drop_reads())
        self._set_leader(leader)
        self._reset_election_timer()

    def _start_prevote(self) -> None:
        """Pre-vote (thesis 9.6): ask whether we could win before bumping the term, so a
        node coming back from a partition cannot depose a healthy leader."""
        self.role = PRECANDIDATE
        self._set_leader(None)
        self._votes = {self.id}
        self._reset_election_timer()
        if len(self._votes) >= self._quorum():
            self._become_candidate()
            return
        last_term = self.term_at(self.last_index) or 0
        req = VoteReq(self.term + 1, self.id, self.last_index, last_term, True)
        for peer in self._peers():
            self._send(peer, req)

    def _become_candidate(self, transfer: bool = False) -> None:
        """§5.2: a new term, a vote for ourselves (persisted before anyone hears of it)."""
        self.role = CANDIDATE
        self.term += 1
        self.voted_for = self.id
        self._persist()
        self._votes = {self.id}
        self._reset_election_timer()
        log.info("%s: campaigning in term %d", self.id, self.term)
        if len(self._votes) >= self._quorum():
            self._become_leader()
            return
        last_term = self.term_at(self.last_index) or 0
        req = VoteReq(self.term, self.id, self.last_index, last_term, False, transfer)
        for peer in self._peers():
            self._send(peer, req)

    def _become_leader(self) -> None:
        """§5.2 won; §5.4.2 / thesis 6.4: a no-op of the new term, so that earlier entries
        commit (and reads can be served) without waiting for a client write."""
        self.role = LEADER
        self.progress = {
            p: Progress(next_index=self.last_index + 1, last_progress=self._clock, active=True)
            for p in self._peers()
        }
        self._hb_seq = 0
        self._batch_ends.clear()
        self._last_quorum_check = self._clock
        log.info("%s: leader in term %d (log ends at %d)", self.id, self.term, self.last_index)
        self.term_start = self.last_index + 1
        self._append_local([LogEntry.make(self.term_start, self.term, NOOP, b"")])
        self._set_leader(self.id)
        for peer, pr in self.progress.items():
            self._send_appends(peer, pr)
        self._maybe_commit()

    def step_down(self) -> None:
        """The driver is stopping: no role, no leader."""
        self.role = FOLLOWER
        self._set_leader(None)

    # --- message dispatch --------------------------------------------------------------

    def step(self, msg: Message) -> None:
        """Handle one consensus message from a peer (§5.1 terms first)."""
        if msg.term > self.term:
            if isinstance(msg, VoteReq) and (msg.pre or (self._in_lease() and not msg.transfer)):
                # a pre-vote never changes our term; a real vote while we hear from a leader
                # is ignored (unless the leader itself asked for it: a transfer)
                if msg.pre:
                    self._on_vote_req(msg)
                return
            if isinstance(msg, VoteResp) and msg.pre and msg.granted:
                self._on_vote_resp(msg)
                return
            leader = msg.src if isinstance(msg, AppendEntries | Heartbeat | SnapshotChunk) else None
            self._become_follower(msg.term, leader)
        elif msg.term < self.term:
            if isinstance(msg, AppendEntries | Heartbeat | SnapshotChunk):
                self._send(msg.src, AppendResp(self.term, self.id, False, 0, 0))
            elif isinstance(msg, VoteReq):
                self._send(msg.src, VoteResp(self.term, self.id, False, msg.pre))
            return
        if isinstance(msg, AppendEntries):
            self._on_append(msg)
        elif isinstance(msg, AppendResp):
            self._on_append_resp(msg)
        elif isinstance(msg, Heartbeat):
            self._on_heartbeat(msg)
        elif isinstance(msg, HeartbeatResp):
            self._on_heartbeat_resp(msg)
        elif isinstance(msg, VoteReq):
            self._on_vote_req(msg)
        elif isinstance(msg, VoteResp):
            self._on_vote_resp(msg)
        elif isinstance(msg, SnapshotChunk):
            self._on_snapshot_chunk(msg)
        elif isinstance(msg, SnapshotResp):
            self._on_snapshot_resp(msg)
        elif isinstance(msg, TimeoutNow):
            self._on_timeout_now(msg)

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self.role == FOLLOWER and m.src == self.leader_id and self.id in self.members:
            log.info("%s: %s hands leadership over; campaigning now", self.id, m.src)
            self._become_candidate(transfer=True)

    # --- elections ---------------------------------------------------------------------

    def _log_ok(self, last_index: int, last_term: int) -> bool:
        """§5.4.1 election restriction: the candidate's log is at least as up-to-date."""
        my_term = self.term_at(self.last_index) or 0
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def _on_vote_req(self, m: VoteReq) -> None:
        if m.pre:
            granted = m.term > self.term and not self._in_lease()
            granted = granted and self._log_ok(m.last_index, m.last_term)
            self._send(m.src, VoteResp(m.term if granted else self.term, self.id, granted, True))
            return
        # §5.2: at most one vote per term, persisted before it is sent
        granted = self.voted_for in ("", m.src) and self._log_ok(m.last_index, m.last_term)
        if granted:
            self.voted_for = m.src
            self._persist()
            self._reset_election_timer()
        self._send(m.src, VoteResp(self.term, self.id, granted, False))

    def _on_vote_resp(self, m: VoteResp) -> None:
        if not m.granted or m.src not in self.members:
            return
        if m.pre and self.role == PRECANDIDATE and m.term == self.term + 1:
            self._votes.add(m.src)
            if len(self._votes) >= self._quorum():
                self._become_candidate()
        elif not m.pre and self.role == CANDIDATE and m.term == self.term:
            self._votes.add(m.src)
            if len(self._votes) >= self._quorum():
                self._become_leader()

    # --- replication: follower side ----------------------------------------------------

    def _leader_contact(self, leader: str) -> None:
        if self.role != FOLLOWER:
            self.role = FOLLOWER
            self.progress.clear()
        self._set_leader(leader)
        self._last_leader_contact = self._clock
        self._reset_election_timer()

    def _on_append(self, m: AppendEntries) -> None:
        """§5.3: accept entries only after the entry before them matches (index and term);
        a conflicting suffix is removed, never a committed entry."""
        self._leader_contact(m.src)
        prev, prev_term, entries = m.prev_index, m.prev_term, m.entries
        for i, e in enumerate(entries):
            if e.index != prev + 1 + i:
                log.warning("%s: AppendEntries from %s with bad indexes; ignored", self.id, m.src)
                return
        if prev < self.commit_index:
            # entries up to our commit index are known to match; skip them
            skip = self.commit_index - prev
            entries = entries[skip:]
            prev = self.commit_index
            prev_term = self.term_at(prev) or 0
        if prev > self.last_index:
            self._send(m.src, AppendResp(self.term, self.id, False, m.prev_index, self.last_index))
            return
        if self.term_at(prev) != prev_term:
            # hint: the last index whose term is <= prev_term, so the leader skips a term's
            # worth of mismatches in one round trip
            hint = min(prev - 1, self.last_index)
            floor = max(self.commit_index, self.snap_index)
            while hint > floor and (self.term_at(hint) or 0) > prev_term:
                hint -= 1
            self._send(m.src, AppendResp(self.term, self.id, False, m.prev_index, hint))
            return
        new: list[LogEntry] = []
        last = self.last_index
        for i, e in enumerate(entries):
            idx = prev + 1 + i
            if idx > last:
                new = entries[i:]
                break
            if self.term_at(idx) != e.term:
                self._truncate_from(idx)
                new = entries[i:]
                break
        if new:
            self._append_local(new)
        match = prev + len(entries)
        if m.commit > self.commit_index:
            self._set_commit(min(m.commit, match))
        self._ack(m.src, match)

    def _ack(self, leader: str, match: int) -> None:
        """Acknowledge ``match`` to the leader once it is fsynced here (an acknowledged entry
        counts towards commit, so it must survive a crash)."""
        if match <= self.durable:
            self._send(leader, AppendResp(self.term, self.id, True, match, 0))
        elif self._pending_ack is None or self._pending_ack[2] < match:
            self._pending_ack = (leader, self.term, match)

    def _on_heartbeat(self, m: Heartbeat) -> None:
        self._leader_contact(m.src)
        commit = min(m.commit, self.last_index)
        if commit > self.commit_index:
            self._set_commit(commit)
        if m.seq != COMMIT_ONLY_SEQ:
            self._send(m.src, HeartbeatResp(self.term, self.id, m.seq))

    def _set_commit(self, index: int) -> None:
        if index > self.commit_index:
            self.commit_index = index
            self._rd.commit_advanced = True
            if self._reads_before_commit and index >= self.term_start:
                ctxs, self._reads_before_commit = self._reads_before_commit, []
                for ctx in ctxs:
                    self.read_index(ctx)
                self.broadcast_heartbeat()  # their confirmation round, without waiting a tick

    # --- local log mutation ------------------------------------------------------------

    def _append_local(self, entries: list[LogEntry]) -> None:
        self._rd.log_writes.append(Append(entries))
        self.log.extend(entries)
        for e in entries:
            if e.kind == CONFIG:
                self._apply_config(e.index, decode_members(e.data)[0])

    def _truncate_from(self, index: int) -> None:
        assert index > self.commit_index, f"truncating committed entry {index}"
        log.info("%s: truncating conflicting log entries from %d", self.id, index)
        self._rd.log_writes.append(Truncate(index))
        del self.log[index - self.snap_index - 1 :]
        self.durable = min(self.durable, index - 1)
        if self._trunc_floor is None or index < self._trunc_floor:
            self._trunc_floor = index
        if self.configs[-1][0] >= index:
            while len(self.configs) > 1 and self.configs[-1][0] >= index:
                self.configs.pop()
            self._rd.members_changed = True

    def _apply_config(self, index: int, members: dict[str, str]) -> None:
        """§6 / thesis 4.1: a configuration takes effect as soon as it is in the log."""
        self.configs.append((index, members))
        self._rd.members_changed = True
        if self.role == LEADER:
            for peer in members:
                if peer != self.id and peer not in self.progress:
                    self.progress[peer] = Progress(
                        next_index=self.last_index + 1, last_progress=self._clock, active=True
                    )
            for peer in [p for p in self.progress if p not in members]:
                del self.progress[peer]
        log.info("%s: membership at index %d: %s", self.id, index, sorted(members))

    # --- durability and apply ----------------------------------------------------------

    def sync_begin(self) -> int | None:
        """The driver starts an fdatasync: the index it will cover, or None if all is
        durable already."""
        if self.durable >= self.last_index:
            return None
        self._trunc_floor = None
        return self.last_index

    def synced(self, target: int) -> bool:
        """The fdatasync begun at ``target`` finished. Entries truncated meanwhile are not
        durable (their replacements were written after the sync began). Returns whether
        another sync is wanted."""
        if self._trunc_floor is not None:
            target = min(target, self._trunc_floor - 1)
        self._trunc_floor = None
        if target > self.durable:
            self.durable = target
            if self.role == LEADER:
                self._maybe_commit()
            elif self._pending_ack is not None:
                leader, term, match = self._pending_ack
                if match <= self.durable:
                    self._pending_ack = None
                    if term == self.term:
                        self._send(leader, AppendResp(self.term, self.id, True, match, 0))
        return self.durable < self.last_index

    def committed_batch(self) -> list[LogEntry]:
        """The next committed entries to apply (only what is durable here too)."""
        hi = min(self.commit_index, self.durable, self.applied_index + APPLY_BATCH)
        if hi <= self.applied_index:
            return []
        return self.log[self.applied_index - self.snap_index : hi - self.snap_index]

    def applied_to(self, index: int) -> None:
        self.applied_index = max(self.applied_index, index)

    def step_down_if_removed(self) -> None:
        """§6 (thesis 4.2.2): a leader removed by a committed configuration steps down."""
        removed = self.id not in self.members and self.configs[-1][0] <= self.commit_index
        if self.role == LEADER and removed:
            log.info("%s: removed from the cluster; stepping down", self.id)
            self._become_follower(self.term, None)

    # --- replication: leader side ------------------------------------------------------

    def _to_probe(self, pr: Progress, next_index: int) -> None:
        pr.probe = True
        pr.inflight.clear()
        pr.next_index = next_index

    def _send_appends(self, peer: str, pr: Progress) -> None:
        if pr.snap is not None:
            return
        if pr.next_index <= self.snap_index:  # §7: what it needs was compacted away
            if peer not in self._rd.snapshots_wanted:
                self._rd.snapshots_wanted.append(peer)
            return
        while True:
            if pr.inflight and (pr.probe or len(pr.inflight) >= MAX_INFLIGHT):
                return
            prev = pr.next_index - 1
            start = prev - self.snap_index  # position of entry `prev + 1` in self.log
            if start >= len(self.log) and not pr.probe:
                return  # nothing new (heartbeats carry the commit index)
            batch: list[LogEntry] = []
            size = 0
            for e in self.log[start : start + MAX_BATCH_ENTRIES]:
                batch.append(e)
                size += len(e.raw)
                if size >= MAX_BATCH_BYTES:
                    break
            prev_term = self.term_at(prev)
            assert prev_term is not None
            commit = min(self.commit_index, prev + len(batch))
            pr.commit_sent = max(pr.commit_sent, commit)
            self._send(peer, AppendEntries(self.term, self.id, prev, prev_term, commit, batch))
            if not pr.inflight:
                pr.last_progress = self._clock
            pr.inflight.append(prev + len(batch))
            if pr.probe or not batch:
                return
            pr.next_index = prev + len(batch) + 1

    def _replicate(self) -> None:
        for peer, pr in self.progress.items():
            self._send_appends(peer, pr)

    def _on_append_resp(self, m: AppendResp) -> None:
        pr = self.progress.get(m.src)
        if self.role != LEADER or pr is None:
            return
        pr.active = True
        if m.success:
            if m.index > pr.match:
                pr.match = m.index
                pr.last_progress = self._clock
            pr.next_index = max(pr.next_index, pr.match + 1)
            while pr.inflight and pr.inflight[0] <= pr.match:
                pr.inflight.popleft()
            if pr.probe:
                pr.probe = False
                pr.inflight.clear()
                pr.next_index = pr.match + 1
            self._maybe_commit()
            self._send_appends(m.src, pr)
            if pr.next_index > self.last_index:  # idle: tell it the commit index now
                self._send_commit(m.src, pr)
            return
        if m.index < pr.match or (pr.probe and m.index != pr.next_index - 1):
            return  # stale rejection
        self._to_probe(pr, max(pr.match + 1, min(m.index, m.hint + 1)))
        self._send_appends(m.src, pr)

    def _maybe_commit(self) -> None:
        """§5.4.2: the highest index stored (durably) on a majority commits, but only if it
        is from this leader's term; earlier entries commit with it (log matching)."""
        if self.role != LEADER:
            return
        matches = [pr.match for p, pr in self.progress.items() if p in self.members]
        if self.id in self.members:
            matches.append(self.durable)
        matches.sort(reverse=True)
        n = matches[self._quorum() - 1]
        if n > self.commit_index and self.term_at(n) == self.term:
            self._set_commit(n)

    def notify_commit(self) -> None:
        """Tell idle followers the new commit index now rather than at the next heartbeat."""
        if self.role != LEADER:
            return
        for peer, pr in self.progress.items():
            if pr.next_index > self.last_index and pr.snap is None:
                self._send_commit(peer, pr)

    def _send_commit(self, peer: str, pr: Progress) -> None:
        """A heartbeat carrying a commit index this follower has not been told yet.

        Sequence 0 asks for no answer: it only speeds up the follower's apply (a lost one is
        covered by the next periodic heartbeat), and the answer would cost both sides a
        message per replicated batch."""
        commit = min(self.commit_index, pr.match)
        if commit > pr.commit_sent:
            pr.commit_sent = commit
            self._send(peer, Heartbeat(self.term, self.id, commit, COMMIT_ONLY_SEQ))

    def broadcast_heartbeat(self) -> None:
        """A heartbeat round (also the confirmation round of pending ReadIndex requests)."""
        if self.role != LEADER:
            return
        self._hb_seq += 1
        for peer, pr in self.progress.items():
            commit = min(self.commit_index, pr.match)
            pr.commit_sent = max(pr.commit_sent, commit)
            self._send(peer, Heartbeat(self.term, self.id, commit, self._hb_seq))
        self._resolve_reads()

    def _on_heartbeat_resp(self, m: HeartbeatResp) -> None:
        pr = self.progress.get(m.src)
        if self.role != LEADER or pr is None:
            return
        pr.active = True
        if m.seq > pr.hb_seq:
            pr.hb_seq = m.seq
            if self._reads:
                self._resolve_reads()
        if pr.match < self.last_index and not pr.inflight and pr.snap is None:
            self._send_appends(m.src, pr)

    # --- proposals ---------------------------------------------------------------------

    def proposals_held(self) -> bool:
        """Too many proposal batches are uncommitted: new proposals wait (leader only)."""
        ends = self._batch_ends
        while ends and ends[0] <= self.commit_index:
            ends.popleft()
        return len(ends) >= MAX_PROPOSAL_BATCHES

    def append_proposals(
        self, local: list[tuple[int, bytes]], remote: list[Propose]
    ) -> list[int | None]:
        """Leader: append local (kind, data) proposals and forwarded ones as one batch and
        replicate it. Returns each local proposal's index, or None for a membership change
        refused because another one is not committed yet (§6: one change at a time)."""
        assert self.role == LEADER
        index = self.last_index + 1
        term = self.term
        entries: list[LogEntry] = []
        indexes: list[int | None] = []
        config_busy = self.configs[-1][0] > self.commit_index
        for kind, data in local:
            if kind == CONFIG:
                if config_busy:
                    indexes.append(None)
                    continue
                config_busy = True
            entries.append(LogEntry.make(index, term, kind, data))
            indexes.append(index)
            index += 1
        for req in remote:
            if req.kind != NORMAL:
                self._send(req.src, ProposeResp(term, self.id, req.req_id, 0, 0, ERR_INVALID))
                continue
            self._send(req.src, ProposeResp(term, self.id, req.req_id, index, term, ERR_NONE))
            for data in req.datas:
                entries.append(LogEntry.make(index, term, NORMAL, data))
                index += 1
        if entries:
            self._append_local(entries)
            self._batch_ends.append(index - 1)
            self._replicate()
            if not self.progress:
                self._maybe_commit()
        return indexes

    # --- reads -------------------------------------------------------------------------

    def read_index(self, ctx: Any) -> bool:
        """Leader (thesis 6.4): ``ctx`` is answered in :attr:`Ready.read_states` with the
        commit index once (1) an entry of this leader's term is committed (before that its
        commit index may lag behind its predecessor's) and (2) a heartbeat round begun after
        that was acknowledged by a majority (so no newer leader can exist).

        Returns whether the driver should start that round (soon, so that reads arriving
        meanwhile share it). It is False while an earlier round is unanswered by a
        majority: the read then waits for the round after it, started when that one is
        answered (:attr:`Ready.read_round_due`). One round in flight, as etcd keeps one
        ReadIndex in flight: under many reads a round per loop iteration cost each read
        about what a replicated put costs."""
        assert self.role == LEADER
        if self.commit_index < self.term_start:
            self._reads_before_commit.append(ctx)
            return False  # the commit of the term's no-op starts their round
        self._reads.append((self._hb_seq + 1, self.commit_index, ctx))
        return self._acked_round() >= self._hb_seq

    def _acked_round(self) -> int:
        """The newest heartbeat round a majority of the voters has answered."""
        seqs = [pr.hb_seq for p, pr in self.progress.items() if p in self.members]
        if self.id in self.members:
            seqs.append(self._hb_seq)
        seqs.sort(reverse=True)
        return seqs[self._quorum() - 1] if len(seqs) >= self._quorum() else 0

    def _resolve_reads(self) -> None:
        acked = self._acked_round()
        keep = []
        for need, index, ctx in self._reads:
            if need <= acked:
                self._rd.read_states.append((ctx, index))
            else:
                keep.append((need, index, ctx))
        self._reads = keep
        if keep and acked >= self._hb_seq:  # every round answered: the rest need the next
            self._rd.read_round_due = True

    def drop_reads(self) -> list[Any]:
        """Forget every pending read (leadership lost, or the driver is stopping); returns
        their contexts."""
        ctxs = self._reads_before_commit + [ctx for _, _, ctx in self._reads]
        self._reads_before_commit = []
        self._reads.clear()
        return ctxs

    # --- leadership transfer -----------------------------------------------------------

    def transfer_step(self, to: str | None = None) -> tuple[str | None, bool]:
        """One step of handing leadership over (thesis 3.10) to voter ``to`` (default: the
        most up-to-date one): catch it up, then tell it to campaign at once. Returns
        (target, whether it was told to campaign); target None means there is no one to
        hand over to."""
        voters = [p for p in self._peers() if p in self.progress]
        if to is not None:
            voters = [p for p in voters if p == to]
        if not voters:
            return None, False
        target = max(voters, key=lambda p: (self.progress[p].match, p))
        pr = self.progress[target]
        if pr.match >= self.last_index:
            log.info("%s: handing leadership to %s", self.id, target)
            self._send(target, TimeoutNow(self.term, self.id))
            return target, True
        self._send_appends(target, pr)
        return target, False

    # --- snapshots ---------------------------------------------------------------------

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """What a local snapshot of the state machine at applied ``index`` records."""
        term = self.term_at(index)
        assert term is not None
        return SnapshotMeta(index, term, self.members_at(index))

    def compact(self, meta: SnapshotMeta) -> None:
        """A local snapshot at ``meta.index`` is durable: drop the entries it covers."""
        if meta.index > self.snap_index:
            self._compact_memory(meta)

    def _compact_memory(self, meta: SnapshotMeta) -> None:
        del self.log[: meta.index - self.snap_index]
        self.snap_index, self.snap_term = meta.index, meta.term
        later = [c for c in self.configs if c[0] > meta.index]
        self.configs = [(meta.index, meta.members), *later]

    def send_snapshot(self, peer: str, meta: SnapshotMeta, data: bytes) -> None:
        """The driver read the stored snapshot a follower asked for (snapshots_wanted)."""
        pr = self.progress.get(peer)
        if self.role != LEADER or pr is None or pr.snap is not None:
            return
        log.info("%s: sending snapshot %d (%d bytes) to %s", self.id, meta.index, len(data), peer)
        pr.snap = SnapSend(meta, data)
        self._send_snapshot_chunk(peer, pr)

    def _send_snapshot_chunk(self, peer: str, pr: Progress) -> None:
        s = pr.snap
        assert s is not None
        chunk = s.data[s.offset : s.offset + self.snapshot_chunk]
        self._send(
            peer,
            SnapshotChunk(
                self.term,
                self.id,
                s.meta.index,
                s.meta.term,
                s.offset,
                len(s.data),
                s.meta.members,
                chunk,
            ),
        )
        s.last_sent = self._clock

    def _on_snapshot_resp(self, m: SnapshotResp) -> None:
        pr = self.progress.get(m.src)
        if self.role != LEADER or pr is None or pr.snap is None:
            return
        pr.active = True
        s = pr.snap
        if m.index != s.meta.index:
            return
        if m.next_offset >= len(s.data):
            pr.snap = None
            pr.match = max(pr.match, s.meta.index)
            self._to_probe(pr, pr.match + 1)
            self._send_appends(m.src, pr)
            return
        s.offset = m.next_offset
        self._send_snapshot_chunk(m.src, pr)

    def _on_snapshot_chunk(self, m: SnapshotChunk) -> None:
        self._leader_contact(m.src)
        if self.local_snapshot_in_progress:
            return  # a local snapshot is being written; the leader will resend
        if m.index <= self.commit_index:
            self._send(m.src, SnapshotResp(self.term, self.id, m.index, m.total))
            self._ack(m.src, self.commit_index)
            return
        recv = self._snap_recv
        if m.offset == 0 or recv is None or recv[:2] != (m.index, m.snap_term):
            recv = self._snap_recv = (m.index, m.snap_term, bytearray())
        buf = recv[2]
        if m.offset == len(buf):
            buf.extend(m.data)
        if len(buf) < m.total:
            self._send(m.src, SnapshotResp(self.term, self.id, m.index, len(buf)))
            return
        self._snap_recv = None
        self._install_snapshot(SnapshotMeta(m.index, m.snap_term, m.members), bytes(buf))
        self._send(m.src, SnapshotResp(self.term, self.id, m.index, m.total))

    def _install_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """§7: a snapshot of committed state replaces the log it covers; entries after it
        stay only if the log continues it (same term at its index)."""
        log.info("%s: installing snapshot %d/%d from the leader", self.id, meta.index, meta.term)
        keep = self.term_at(meta.index) == meta.term
        self._rd.log_writes.append(Install(meta, data, keep))
        if keep:
            self._compact_memory(meta)
        else:
            self.log = []
            self.snap_index, self.snap_term = meta.index, meta.term
            self.configs = [(meta.index, meta.members)]
            self.durable = meta.index
            self._trunc_floor = meta.index + 1
            self._rd.members_changed = True
        self.applied_index = max(self.applied_index, meta.index)
        self._set_commit(meta.index)
