"""The Raft node: elections (with pre-vote and check-quorum), pipelined replication with group
commit, ReadIndex reads, snapshots and single-server membership changes.

The algorithm follows figure 2 of the Raft paper and chapters 3, 4 and 6 of Ongaro's thesis.
All I/O goes through three small interfaces so the same code runs for real and inside the
deterministic simulation (:mod:`plasmacloud.raft.sim`): the event loop's clock
(``loop.time()``, ``call_soon``, ``sleep``), a :class:`~plasmacloud.raft.transport.Transport`
and a :class:`~plasmacloud.raft.disk.Disk` under :class:`~plasmacloud.raft.storage.Storage`.

Throughput comes from batching at every step: proposals made during one loop tick become one
log write, one ``fdatasync`` (in a worker thread, while AppendEntries are already on their way
to the followers), one AppendEntries frame per follower, one acknowledgement per fsync on the
follower and one ``StateMachine.apply`` call per committed batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from plasmacloud.raft.api import (
    Entry,
    Member,
    NoLeaderError,
    NotLeaderError,
    ProposalDroppedError,
    ProposalTimeoutError,
    RaftError,
    RaftStatus,
    ShutdownError,
    StateMachine,
)
from plasmacloud.raft.codec import (
    CONFIG,
    ERR_CONFIG_BUSY,
    ERR_INVALID,
    ERR_NONE,
    ERR_NOT_LEADER,
    NOOP,
    NORMAL,
    AppendEntries,
    AppendResp,
    CodecError,
    Heartbeat,
    HeartbeatResp,
    LogEntry,
    Message,
    Propose,
    ProposeResp,
    ReadReq,
    ReadResp,
    SnapshotChunk,
    SnapshotResp,
    TimeoutNow,
    VoteReq,
    VoteResp,
    decode_members,
    encode_members,
)
from plasmacloud.raft.disk import Disk, OsDisk
from plasmacloud.raft.metrics import RaftMetrics
from plasmacloud.raft.storage import HardState, SnapshotMeta, Storage
from plasmacloud.raft.transport import TcpTransport, Transport

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


@dataclass
class RaftConfig:
    """How to run one node of one Raft group."""

    node_id: str
    data_dir: Path  # the engine owns this directory (log, hard state, snapshot)
    listen_host: str
    listen_port: int
    members: dict[str, str]  # node_id -> "host:port" of peer ports (self too): the initial
    # cluster when bootstrapping; when joining, where to reach the cluster being joined
    bootstrap: bool = True  # False: join an existing cluster; wait to be added via add_member
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None
    resolve: Callable[[str], str] | None = None  # hostname -> IP (NodeConfig.resolve)
    election_timeout: tuple[float, float] = (0.3, 0.6)
    heartbeat_interval: float = 0.05
    snapshot_threshold: int = 10_000  # applied entries between snapshots / log compactions
    registry: CollectorRegistry | None = None  # if given, raft metrics are registered there
    snapshot_chunk: int = SNAPSHOT_CHUNK


@dataclass(slots=True)
class _SnapSend:
    meta: SnapshotMeta
    data: bytes
    offset: int = 0
    last_sent: float = 0.0


@dataclass(slots=True)
class _Progress:
    """The leader's view of one follower."""

    next_index: int
    match: int = 0
    probe: bool = True  # unsure where the follower's log ends: one AppendEntries at a time
    inflight: deque[int] = field(default_factory=deque)  # last index of each unacked append
    last_progress: float = 0.0
    active: bool = False  # responded since the last check-quorum
    hb_seq: int = 0  # highest heartbeat sequence acknowledged (ReadIndex)
    snap: _SnapSend | None = None
    commit_sent: int = 0  # highest commit index told to this follower


def _encode_change(node_id: str, address: str | None) -> bytes:
    """A forwarded membership change: b"+" + {id: address} to add, b"-" + {id: ""} to remove."""
    return (b"-" if address is None else b"+") + encode_members({node_id: address or ""})


def _decode_change(data: bytes) -> tuple[str, str | None]:
    members, _ = decode_members(data, 1)
    if len(members) != 1 or data[:1] not in (b"+", b"-"):
        raise CodecError("malformed membership change")
    ((node_id, address),) = members.items()
    return node_id, address if data[:1] == b"+" else None


class RaftNode:
    """One member of a Raft group; see the module docstring."""

    def __init__(
        self,
        config: RaftConfig,
        state_machine: StateMachine,
        *,
        transport: Transport | None = None,
        disk: Disk | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.id = config.node_id
        self.sm = state_machine
        self._transport: Transport = transport or TcpTransport(
            config.node_id,
            config.listen_host,
            config.listen_port,
            config.server_ssl,
            config.client_ssl,
            config.resolve,
        )
        self._storage = Storage(disk or OsDisk(), str(config.data_dir))
        self._rng = rng or random.Random()
        self._metrics = RaftMetrics(config.registry) if config.registry is not None else None
        self._listeners: list[Callable[[str | None, int], None]] = []

        # persistent state (mirrored in storage)
        self.term = 0
        self.voted_for = ""
        self._log: list[LogEntry] = []  # entries snap_index+1 .. last_index
        self._snap_index = 0
        self._snap_term = 0
        self._configs: list[tuple[int, dict[str, str]]] = [(0, {})]  # (index, members) history

        # volatile state
        self.role = FOLLOWER
        self._leader_id: str | None = None
        self._leader_known = asyncio.Event()
        self.commit_index = 0
        self.applied_index = 0
        self._durable = 0  # entries <= this are fsynced (and not truncated since)
        self._trunc_floor: int | None = None  # lowest truncation during an in-flight sync
        self._election_deadline = 0.0
        self._last_leader_contact = -1e9
        self._votes: set[str] = set()
        self._pending_ack: tuple[str, int, int] | None = None  # (leader, term, match)

        # leader state
        self._progress: dict[str, _Progress] = {}
        self._term_start = 0  # index of this leader's no-op entry
        self._hb_seq = 0
        self._reads: list[tuple[int, int, asyncio.Future[int]]] = []  # (need seq, index, fut)
        self._broadcast_scheduled = False
        self._commit_notify_scheduled = False
        self._last_quorum_check = 0.0

        # proposals and waiters
        self._prop_buf: list[tuple[int, bytes, asyncio.Future[Any]]] = []
        self._remote_buf: list[Propose] = []
        self._flush_scheduled = False
        self._batch_ends: deque[int] = deque()  # leader: last index of each uncommitted batch
        self._waiters: dict[int, tuple[int, asyncio.Future[Any]]] = {}  # index -> (term, fut)
        self._apply_waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap
        self._counter = itertools.count()
        self._fwd_buf: list[tuple[int, bytes, asyncio.Future[Any]]] = []
        self._fwd_scheduled = False
        self._fwd_reqs: dict[int, list[asyncio.Future[Any]]] = {}
        self._recent: dict[int, tuple[int, Any]] = {}  # applied results a forward may claim
        self._fwd_reads: list[asyncio.Future[int]] = []
        self._fwd_reads_scheduled = False
        self._read_reqs: dict[int, list[asyncio.Future[int]]] = {}

        # snapshots
        self._snapshotting = False
        self._snap_recv: tuple[int, int, bytearray] | None = None

        self._tasks: list[asyncio.Task[Any]] = []  # cancelled on stop
        self._disk_tasks: list[asyncio.Task[Any]] = []  # drained on stop (fsync, snapshot)
        self._sync_wanted = asyncio.Event()
        self._started = False
        self._stopped = False

    # --- log helpers ---------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self._snap_index + len(self._log)

    def _term_at(self, index: int) -> int | None:
        if index == self._snap_index:
            return self._snap_term
        if index < self._snap_index or index > self.last_index:
            return None
        return self._log[index - self._snap_index - 1].term

    @property
    def members(self) -> dict[str, str]:
        return self._configs[-1][1]

    def _members_at(self, index: int) -> dict[str, str]:
        for cidx, members in reversed(self._configs):
            if cidx <= index:
                return members
        return self._configs[0][1]

    def _peers(self) -> list[str]:
        return [n for n in self.members if n != self.id]

    def _quorum(self) -> int:
        return len(self.members) // 2 + 1

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from storage, start the transport and timers."""
        if self._started:
            return
        self._started = True
        rec = self._storage.open()
        hs = rec.hard_state
        if hs is None:
            hs = HardState(0, "", dict(self.config.members) if self.config.bootstrap else {})
            self._storage.save_hard_state(hs)
        self.term, self.voted_for = hs.term, hs.vote
        if rec.snapshot is not None:
            self._snap_index, self._snap_term = rec.snapshot.index, rec.snapshot.term
            self._configs = [(rec.snapshot.index, rec.snapshot.members)]
        else:
            self._configs = [(0, hs.members)]
        self._log = rec.entries
        for e in self._log:
            if e.kind == CONFIG:
                self._configs.append((e.index, decode_members(e.data)[0]))
        await self._storage.sync()  # what a crashed process left in the page cache
        self._durable = self.last_index
        self._recover_state_machine()
        self.commit_index = self.applied_index
        log.info(
            "%s: recovered term %d, snapshot %d, log %d..%d, applied %d, members %s",
            self.id,
            self.term,
            self._snap_index,
            self._snap_index + 1,
            self.last_index,
            self.applied_index,
            sorted(self.members),
        )
        await self._transport.start(self._on_message)
        # a joining node is not a member yet but must reach the cluster it joins
        self._transport.update_peers({**self.config.members, **self.members})
        self._reset_election_deadline()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._ticker()))
        self._disk_tasks.append(loop.create_task(self._syncer()))
        self._update_gauges()

    def _recover_state_machine(self) -> None:
        sm_applied = self.sm.applied_index()
        if self._snap_index and sm_applied < self._snap_index:
            meta, data = self._storage.read_snapshot()
            assert meta is not None and meta.index == self._snap_index
            self.sm.restore(data, meta.index)
            self.applied_index = meta.index
        elif sm_applied > self.last_index:
            log.error(
                "%s: state machine says it applied %d but the log ends at %d; replaying from "
                "the log end",
                self.id,
                sm_applied,
                self.last_index,
            )
            self.applied_index = self.last_index
        else:
            self.applied_index = max(sm_applied, self._snap_index)

    async def stop(self, *, handover: bool = True) -> None:
        """Stop timers, transport and storage; fail everything pending. Idempotent.

        A leader first hands leadership to its most up-to-date follower (``handover``), so a
        graceful restart costs the cluster a round trip instead of an election timeout."""
        if self._stopped:
            return
        if handover and self.is_leader and self._peers():
            await self.transfer_leadership()
        if self._stopped:
            return
        self._stopped = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        # let an fsync or snapshot write in a worker thread finish before closing its files
        self._sync_wanted.set()
        if self._disk_tasks:
            await asyncio.wait(self._disk_tasks, timeout=10.0)
        for t in self._disk_tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        self._disk_tasks.clear()
        if self._started:
            await self._transport.stop()
            self._storage.close()
        self._fail_all(ShutdownError("raft node stopped"))
        self.role = FOLLOWER
        self._set_leader(None)

    def _fail_all(self, exc: Exception) -> None:
        futs: list[asyncio.Future[Any]] = [f for _, _, f in self._prop_buf]
        futs += [f for _, _, f in self._fwd_buf]
        futs += [f for _, f in self._waiters.values()]
        futs += [f for _, _, f in self._apply_waiters]
        futs += [f for fs in self._fwd_reqs.values() for f in fs]
        futs += [f for fs in self._read_reqs.values() for f in fs]
        futs += [f for _, _, f in self._reads]
        futs += self._fwd_reads
        for f in futs:
            if not f.done():
                f.set_exception(exc)
        self._prop_buf.clear()
        self._fwd_buf.clear()
        self._waiters.clear()
        self._apply_waiters.clear()
        self._fwd_reqs.clear()
        self._read_reqs.clear()
        self._reads.clear()
        self._fwd_reads.clear()

    # --- public API ----------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    @property
    def leader_id(self) -> str | None:
        return self._leader_id

    async def transfer_leadership(self, timeout: float | None = None) -> str | None:
        """Best effort: make the most up-to-date follower leader (thesis 3.10). Returns the
        leader afterwards (None if unknown); never raises for a transfer that did not happen."""
        loop = asyncio.get_running_loop()
        wait = self.config.heartbeat_interval / 5
        try:
            async with asyncio.timeout(timeout or self.config.election_timeout[1] * 2):
                while self.is_leader:
                    voters = [p for p in self._peers() if p in self._progress]
                    if not voters:
                        return self.id
                    target = max(voters, key=lambda p: (self._progress[p].match, p))
                    pr = self._progress[target]
                    if pr.match >= self.last_index:
                        log.info("%s: handing leadership to %s", self.id, target)
                        self._send(target, TimeoutNow(self.term, self.id))
                        deadline = loop.time() + self.config.election_timeout[0]
                        while self.is_leader and loop.time() < deadline:
                            await asyncio.sleep(wait)
                    else:
                        self._send_appends(target, pr)
                        await asyncio.sleep(wait)
                while self._leader_id is None:  # stepped down; learn who took over
                    await self._leader_known.wait()
        except TimeoutError:
            log.warning("%s: leadership transfer did not complete", self.id)
        return self._leader_id

    def add_leader_listener(self, cb: Callable[[str | None, int], None]) -> None:
        """Call ``cb(leader_id, term)`` whenever the known leader changes."""
        self._listeners.append(cb)

    def status(self) -> RaftStatus:
        return RaftStatus(
            node_id=self.id,
            role=self.role,
            term=self.term,
            leader_id=self._leader_id,
            commit_index=self.commit_index,
            applied_index=self.applied_index,
            last_log_index=self.last_index,
            snapshot_index=self._snap_index,
            members=tuple(Member(n, a) for n, a in sorted(self.members.items())),
        )

    async def wait_for_leader(self, timeout: float = 10.0) -> str:
        """Wait until some leader is known and return its id."""
        try:
            async with asyncio.timeout(timeout):
                while self._leader_id is None:
                    await self._leader_known.wait()
        except TimeoutError:
            raise NoLeaderError(f"no leader elected within {timeout}s") from None
        return self._leader_id

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        """Replicate ``data``; return the state machine's result for it once applied here."""
        return await self._propose(NORMAL, data, timeout)

    async def _propose(self, kind: int, data: bytes, timeout: float) -> Any:
        if self._stopped or not self._started:
            raise ShutdownError("raft node is not running")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._leader_id is None:
            await self.wait_for_leader(timeout)
        fut: asyncio.Future[Any] = loop.create_future()
        if self.role == LEADER:
            self._prop_buf.append((kind, data, fut))
            self._schedule_flush()
        else:
            self._fwd_buf.append((kind, data, fut))
            if not self._fwd_scheduled:
                self._fwd_scheduled = True
                loop.call_soon(self._flush_forwards)
        if self._metrics:
            self._metrics.pending.inc()
        try:
            async with asyncio.timeout_at(deadline):
                result = await fut
        except TimeoutError:
            if self._metrics:
                self._metrics.failed.inc()
            raise ProposalTimeoutError(f"proposal not committed within {timeout}s") from None
        except RaftError:
            if self._metrics:
                self._metrics.failed.inc()
            raise
        finally:
            if self._metrics:
                self._metrics.pending.dec()
        return result

    async def read_index(self, timeout: float = 5.0) -> None:
        """Linearizable read barrier: return once this node has applied everything committed
        before the call (leader's commit index confirmed by a heartbeat round)."""
        if self._stopped or not self._started:
            raise ShutdownError("raft node is not running")
        try:
            async with asyncio.timeout(timeout):
                if self._leader_id is None:
                    await self.wait_for_leader(timeout)
                if self.role == LEADER:
                    index = await self._leader_read_index()
                else:
                    loop = asyncio.get_running_loop()
                    fut: asyncio.Future[int] = loop.create_future()
                    self._fwd_reads.append(fut)
                    if not self._fwd_reads_scheduled:
                        self._fwd_reads_scheduled = True
                        loop.call_soon(self._flush_fwd_reads)
                    index = await fut
                await self._wait_applied(index)
        except TimeoutError:
            raise ProposalTimeoutError(f"read barrier not confirmed within {timeout}s") from None

    async def add_member(self, node_id: str, address: str, timeout: float = 10.0) -> None:
        """Add one server; returns once the change is committed. Callable on any node
        (a follower forwards it to the leader)."""
        await self._member_change(node_id, address, timeout)

    async def remove_member(self, node_id: str, timeout: float = 10.0) -> None:
        """Remove one server; returns once the change is committed. Callable on any node."""
        await self._member_change(node_id, None, timeout)

    async def _member_change(self, node_id: str, address: str | None, timeout: float) -> None:
        if self._leader_id is None:
            await self.wait_for_leader(timeout)
        if self.is_leader:
            await self._change_config(node_id, address, timeout)
        else:  # the leader makes the change and answers with a commit index to wait for
            await self._propose(CONFIG, _encode_change(node_id, address), timeout)

    async def _change_config(self, node_id: str, address: str | None, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                # one change at a time, and only once this leader's term has a committed entry
                while self.is_leader and (
                    self._configs[-1][0] > self.commit_index or self.commit_index < self._term_start
                ):
                    await self._wait_applied(max(self._configs[-1][0], self._term_start))
        except TimeoutError:
            raise ProposalTimeoutError("a previous membership change did not commit") from None
        if not self.is_leader:
            raise NotLeaderError(self._leader_id, self.members.get(self._leader_id or ""))
        new = dict(self.members)
        if address is None:
            new.pop(node_id, None)
        else:
            new[node_id] = address
        if new == self.members:
            return
        if not new:
            raise RaftError("cannot remove the last member")
        await self._propose(CONFIG, encode_members(new), timeout)

    async def _serve_change(self, m: Propose) -> None:
        """Run a membership change a follower forwarded, then tell it what to wait for."""
        error = ERR_NONE
        try:
            node_id, address = _decode_change(m.datas[0] if m.datas else b"")
            await self._change_config(node_id, address, self.config.election_timeout[1] * 10)
        except (NotLeaderError, NoLeaderError):
            error = ERR_NOT_LEADER
        except (RaftError, CodecError):
            error = ERR_CONFIG_BUSY
        index = self.commit_index if error == ERR_NONE else 0
        self._send(m.src, ProposeResp(self.term, self.id, m.req_id, index, 0, error))

    # --- the event loop side: ticks, sync -------------------------------------------------

    def _reset_election_deadline(self) -> None:
        lo, hi = self.config.election_timeout
        self._election_deadline = self._now() + self._rng.uniform(lo, hi)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                self._tick()
            except Exception:
                log.exception("%s: tick failed", self.id)

    def _tick(self) -> None:
        now = self._now()
        if self.role == LEADER:
            self._broadcast_heartbeat()
            for peer, pr in self._progress.items():
                self._tick_peer(peer, pr, now)
            if now - self._last_quorum_check >= self.config.election_timeout[0]:
                self._check_quorum(now)
        elif now >= self._election_deadline:
            if self.id in self.members:
                self._start_prevote()
            else:
                self._reset_election_deadline()
        if self._fwd_reqs:  # forget forwards whose callers are gone (timed out)
            for rid in [r for r, fs in self._fwd_reqs.items() if all(f.done() for f in fs)]:
                del self._fwd_reqs[rid]
        if not self._fwd_reqs:
            self._recent.clear()
        elif len(self._recent) > 50_000:  # a forward never waits that long
            floor = self.applied_index - 10_000
            self._recent = {i: r for i, r in self._recent.items() if i > floor}

    def _tick_peer(self, peer: str, pr: _Progress, now: float) -> None:
        if pr.snap is not None:
            if now - pr.snap.last_sent > self.config.election_timeout[0] / 2:
                self._send_snapshot_chunk(peer, pr)
            return
        if pr.probe:
            pr.inflight.clear()  # re-send the probe each tick until answered
            self._send_appends(peer, pr)
        elif pr.inflight and now - pr.last_progress > self.config.election_timeout[0]:
            log.info("%s: no progress from %s; probing from %d", self.id, peer, pr.match + 1)
            self._to_probe(pr, pr.match + 1)
            self._send_appends(peer, pr)

    def _check_quorum(self, now: float) -> None:
        self._last_quorum_check = now
        active = sum(1 for p in self._peers() if self._progress[p].active)
        if self.id in self.members:
            active += 1
        for pr in self._progress.values():
            pr.active = False
        if active < self._quorum():
            log.warning("%s: lost contact with the majority; stepping down", self.id)
            self._become_follower(self.term, None)

    async def _syncer(self) -> None:
        """Group commit: one fdatasync covers every append made before it started."""
        while not self._stopped:
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            if self._stopped or self._durable >= self.last_index:
                continue
            target = self.last_index
            self._trunc_floor = None
            t0 = time.perf_counter()
            with self._disk("log fdatasync"):
                await self._storage.sync()
            if self._stopped:
                return
            if self._metrics:
                self._metrics.fsync.observe(time.perf_counter() - t0)
            if self._trunc_floor is not None:
                target = min(target, self._trunc_floor - 1)
            self._trunc_floor = None
            if target > self._durable:
                self._durable = target
                try:
                    self._on_durable()
                except Exception:
                    log.exception("%s: handling fsync completion failed", self.id)
            if self._durable < self.last_index:
                self._sync_wanted.set()

    def _on_durable(self) -> None:
        if self.role == LEADER:
            self._maybe_commit()
        elif self._pending_ack is not None:
            leader, term, match = self._pending_ack
            if match <= self._durable:
                self._pending_ack = None
                if term == self.term:
                    self._send(leader, AppendResp(self.term, self.id, True, match, 0))
        self._apply()

    # --- local log mutation --------------------------------------------------------------

    @contextlib.contextmanager
    def _disk(self, what: str) -> Iterator[None]:
        """A failed write or fsync means this node's log can no longer be trusted (fsync
        errors are not retryable: the kernel may have dropped the pages), so stop the node
        rather than acknowledge anything more."""
        try:
            yield
        except OSError as exc:
            self._halt(f"{what} failed ({exc})")
            raise

    def _halt(self, why: str) -> None:
        """Stop this node loudly (its health goes red: no leader, no progress) instead of
        going on in a state that can no longer be trusted."""
        if not self._stopped:
            log.critical("%s: %s; stopping this node", self.id, why, exc_info=True)
            task = asyncio.get_running_loop().create_task(self.stop())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _append_local(self, entries: list[LogEntry]) -> None:
        with self._disk("log append"):
            self._storage.append(entries)
        self._log.extend(entries)
        for e in entries:
            if e.kind == CONFIG:
                self._apply_config(e.index, decode_members(e.data)[0])
        self._sync_wanted.set()

    def _truncate_from(self, index: int) -> None:
        assert index > self.commit_index, f"truncating committed entry {index}"
        log.info("%s: truncating conflicting log entries from %d", self.id, index)
        with self._disk("log truncation"):
            self._storage.truncate_suffix(index)
        del self._log[index - self._snap_index - 1 :]
        self._durable = min(self._durable, index - 1)
        if self._trunc_floor is None or index < self._trunc_floor:
            self._trunc_floor = index
        if self._configs[-1][0] >= index:
            while len(self._configs) > 1 and self._configs[-1][0] >= index:
                self._configs.pop()
            self._transport.update_peers(self.members)
        for i in [i for i in self._waiters if i >= index]:
            _term, fut = self._waiters.pop(i)
            if not fut.done():
                fut.set_exception(ProposalDroppedError("entry overwritten by a new leader"))

    def _apply_config(self, index: int, members: dict[str, str]) -> None:
        """A configuration takes effect as soon as it is in the log (thesis 4.1)."""
        self._configs.append((index, members))
        self._transport.update_peers(members)
        if self.role == LEADER:
            for peer in members:
                if peer != self.id and peer not in self._progress:
                    self._progress[peer] = _Progress(
                        next_index=self.last_index + 1, last_progress=self._now(), active=True
                    )
            for peer in [p for p in self._progress if p not in members]:
                del self._progress[peer]
        log.info("%s: membership at index %d: %s", self.id, index, sorted(members))

    # --- roles ---------------------------------------------------------------------------

    def _persist(self) -> None:
        with self._disk("saving term and vote"):
            hs = HardState(self.term, self.voted_for, self._configs[0][1])
            self._storage.save_hard_state(hs)
        if self._metrics:
            self._metrics.term.set(self.term)

    def _set_leader(self, leader: str | None) -> None:
        if leader == self._leader_id:
            return
        self._leader_id = leader
        if leader is None:
            self._leader_known.clear()
        else:
            self._leader_known.set()
            if self._metrics:
                self._metrics.leader_changes.inc()
        if self._metrics:
            self._metrics.is_leader.set(1 if leader == self.id else 0)
        for cb in list(self._listeners):
            try:
                cb(leader, self.term)
            except Exception:
                log.exception("%s: leader listener failed", self.id)

    def _become_follower(self, term: int, leader: str | None) -> None:
        was_leader = self.role == LEADER
        if term > self.term:
            self.term = term
            self.voted_for = ""
            self._persist()
        self.role = FOLLOWER
        if was_leader:
            self._progress.clear()
            self._batch_ends.clear()
            if self._prop_buf or self._remote_buf:
                self._schedule_flush()  # held proposals: refuse them now (not the leader)
            for _, _, fut in self._reads:
                if not fut.done():
                    fut.set_exception(NoLeaderError("leadership lost during a read"))
            self._reads.clear()
        self._set_leader(leader)
        self._reset_election_deadline()

    def _start_prevote(self) -> None:
        self.role = PRECANDIDATE
        self._set_leader(None)
        self._votes = {self.id}
        self._reset_election_deadline()
        if len(self._votes) >= self._quorum():
            self._become_candidate()
            return
        req = VoteReq(
            self.term + 1, self.id, self.last_index, self._term_at(self.last_index) or 0, True
        )
        for peer in self._peers():
            self._send(peer, req)

    def _become_candidate(self, transfer: bool = False) -> None:
        self.role = CANDIDATE
        self.term += 1
        self.voted_for = self.id
        self._persist()
        self._votes = {self.id}
        self._reset_election_deadline()
        log.info("%s: campaigning in term %d", self.id, self.term)
        if len(self._votes) >= self._quorum():
            self._become_leader()
            return
        last_term = self._term_at(self.last_index) or 0
        req = VoteReq(self.term, self.id, self.last_index, last_term, False, transfer)
        for peer in self._peers():
            self._send(peer, req)

    def _become_leader(self) -> None:
        self.role = LEADER
        now = self._now()
        self._progress = {
            p: _Progress(next_index=self.last_index + 1, last_progress=now, active=True)
            for p in self._peers()
        }
        self._hb_seq = 0
        self._batch_ends.clear()
        self._last_quorum_check = now
        log.info("%s: leader in term %d (log ends at %d)", self.id, self.term, self.last_index)
        self._term_start = self.last_index + 1
        self._append_local([LogEntry.make(self._term_start, self.term, NOOP, b"")])
        self._set_leader(self.id)
        for peer, pr in self._progress.items():
            self._send_appends(peer, pr)
        self._maybe_commit()

    # --- message dispatch ----------------------------------------------------------------

    def _send(self, to: str, msg: Message) -> None:
        self._transport.send(to, msg)

    def _on_message(self, msg: Message) -> None:
        if self._stopped:
            return
        try:
            self._dispatch(msg)
        except Exception:
            log.exception("%s: failed to handle %s from %s", self.id, type(msg).__name__, msg.src)

    def _in_lease(self) -> bool:
        """Heard from a live leader recently: votes for a disruptive candidate are refused."""
        if self.role == LEADER:
            return True
        lo = self.config.election_timeout[0]
        return self._leader_id is not None and self._now() - self._last_leader_contact < lo

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, Propose):
            self._on_propose(msg)
            return
        if isinstance(msg, ProposeResp):
            self._on_propose_resp(msg)
            return
        if isinstance(msg, ReadReq):
            self._on_read_req(msg)
            return
        if isinstance(msg, ReadResp):
            self._on_read_resp(msg)
            return
        if msg.term > self.term:
            if isinstance(msg, VoteReq) and (msg.pre or (self._in_lease() and not msg.transfer)):
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
        if self.role == FOLLOWER and m.src == self._leader_id and self.id in self.members:
            log.info("%s: %s hands leadership over; campaigning now", self.id, m.src)
            self._become_candidate(transfer=True)

    # --- elections -----------------------------------------------------------------------

    def _log_ok(self, last_index: int, last_term: int) -> bool:
        my_term = self._term_at(self.last_index) or 0
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def _on_vote_req(self, m: VoteReq) -> None:
        if m.pre:
            granted = m.term > self.term and not self._in_lease()
            granted = granted and self._log_ok(m.last_index, m.last_term)
            self._send(m.src, VoteResp(m.term if granted else self.term, self.id, granted, True))
            return
        granted = self.voted_for in ("", m.src) and self._log_ok(m.last_index, m.last_term)
        if granted:
            self.voted_for = m.src
            self._persist()
            self._reset_election_deadline()
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

    # --- replication: follower side ------------------------------------------------------

    def _leader_contact(self, leader: str) -> None:
        if self.role != FOLLOWER:
            self.role = FOLLOWER
            self._progress.clear()
        self._set_leader(leader)
        self._last_leader_contact = self._now()
        self._reset_election_deadline()

    def _on_append(self, m: AppendEntries) -> None:
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
            prev_term = self._term_at(prev) or 0
        if prev > self.last_index:
            self._send(m.src, AppendResp(self.term, self.id, False, m.prev_index, self.last_index))
            return
        if self._term_at(prev) != prev_term:
            hint = min(prev - 1, self.last_index)
            floor = max(self.commit_index, self._snap_index)
            while hint > floor and (self._term_at(hint) or 0) > prev_term:
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
            if self._term_at(idx) != e.term:
                self._truncate_from(idx)
                new = entries[i:]
                break
        if new:
            self._append_local(new)
        match = prev + len(entries)
        if m.commit > self.commit_index:
            self._set_commit(min(m.commit, match))
        self._ack(m.src, match)
        self._apply()

    def _ack(self, leader: str, match: int) -> None:
        """Acknowledge ``match`` to the leader once it is fsynced here."""
        if match <= self._durable:
            self._send(leader, AppendResp(self.term, self.id, True, match, 0))
        elif self._pending_ack is None or self._pending_ack[2] < match:
            self._pending_ack = (leader, self.term, match)

    def _on_heartbeat(self, m: Heartbeat) -> None:
        self._leader_contact(m.src)
        commit = min(m.commit, self.last_index)
        if commit > self.commit_index:
            self._set_commit(commit)
            self._apply()
        if m.seq != COMMIT_ONLY_SEQ:
            self._send(m.src, HeartbeatResp(self.term, self.id, m.seq))

    def _set_commit(self, index: int) -> None:
        if index > self.commit_index:
            self.commit_index = index
            if self._metrics:
                self._metrics.commit_index.set(index)

    # --- replication: leader side --------------------------------------------------------

    def _to_probe(self, pr: _Progress, next_index: int) -> None:
        pr.probe = True
        pr.inflight.clear()
        pr.next_index = next_index

    def _send_appends(self, peer: str, pr: _Progress) -> None:
        if pr.snap is not None:
            return
        if pr.next_index <= self._snap_index:
            self._start_snapshot_send(peer, pr)
            return
        while True:
            if pr.inflight and (pr.probe or len(pr.inflight) >= MAX_INFLIGHT):
                return
            prev = pr.next_index - 1
            start = prev - self._snap_index  # position of entry `prev + 1` in self._log
            if start >= len(self._log) and not pr.probe:
                return  # nothing new (heartbeats carry the commit index)
            batch: list[LogEntry] = []
            size = 0
            for e in self._log[start : start + MAX_BATCH_ENTRIES]:
                batch.append(e)
                size += len(e.raw)
                if size >= MAX_BATCH_BYTES:
                    break
            prev_term = self._term_at(prev)
            assert prev_term is not None
            commit = min(self.commit_index, prev + len(batch))
            pr.commit_sent = max(pr.commit_sent, commit)
            self._send(peer, AppendEntries(self.term, self.id, prev, prev_term, commit, batch))
            if not pr.inflight:
                pr.last_progress = self._now()
            pr.inflight.append(prev + len(batch))
            if pr.probe or not batch:
                return
            pr.next_index = prev + len(batch) + 1

    def _replicate(self) -> None:
        for peer, pr in self._progress.items():
            self._send_appends(peer, pr)

    def _on_append_resp(self, m: AppendResp) -> None:
        pr = self._progress.get(m.src)
        if self.role != LEADER or pr is None:
            return
        pr.active = True
        if m.success:
            if m.index > pr.match:
                pr.match = m.index
                pr.last_progress = self._now()
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
        if self.role != LEADER:
            return
        matches = [pr.match for p, pr in self._progress.items() if p in self.members]
        if self.id in self.members:
            matches.append(self._durable)
        matches.sort(reverse=True)
        n = matches[self._quorum() - 1]
        if n > self.commit_index and self._term_at(n) == self.term:
            self._set_commit(n)
            if self._prop_buf or self._remote_buf:
                self._schedule_flush()  # proposals may be held behind the batch that committed
            self._apply()
            if not self._commit_notify_scheduled:
                self._commit_notify_scheduled = True
                asyncio.get_running_loop().call_soon(self._notify_commit)

    def _notify_commit(self) -> None:
        """Tell idle followers the new commit index now rather than at the next heartbeat."""
        self._commit_notify_scheduled = False
        if self.role != LEADER:
            return
        for peer, pr in self._progress.items():
            if pr.next_index > self.last_index and pr.snap is None:
                self._send_commit(peer, pr)

    def _send_commit(self, peer: str, pr: _Progress) -> None:
        """A heartbeat carrying a commit index this follower has not been told yet.

        Sequence 0 asks for no answer: it only speeds up the follower's apply (a lost one is
        covered by the next periodic heartbeat), and the answer would cost both sides a
        message per replicated batch."""
        commit = min(self.commit_index, pr.match)
        if commit > pr.commit_sent:
            pr.commit_sent = commit
            self._send(peer, Heartbeat(self.term, self.id, commit, COMMIT_ONLY_SEQ))

    def _broadcast_heartbeat(self) -> None:
        self._broadcast_scheduled = False
        if self.role != LEADER:
            return
        self._hb_seq += 1
        for peer, pr in self._progress.items():
            commit = min(self.commit_index, pr.match)
            pr.commit_sent = max(pr.commit_sent, commit)
            self._send(peer, Heartbeat(self.term, self.id, commit, self._hb_seq))
        self._resolve_reads()

    def _on_heartbeat_resp(self, m: HeartbeatResp) -> None:
        pr = self._progress.get(m.src)
        if self.role != LEADER or pr is None:
            return
        pr.active = True
        if m.seq > pr.hb_seq:
            pr.hb_seq = m.seq
            if self._reads:
                self._resolve_reads()
        if pr.match < self.last_index and not pr.inflight and pr.snap is None:
            self._send_appends(m.src, pr)

    # --- proposals -----------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_proposals)

    def _flush_proposals(self) -> None:
        self._flush_scheduled = False
        if self.role == LEADER:
            ends = self._batch_ends
            while ends and ends[0] <= self.commit_index:
                ends.popleft()
            if len(ends) >= MAX_PROPOSAL_BATCHES:
                return  # held: _maybe_commit flushes again once the oldest batch commits
        local, self._prop_buf = self._prop_buf, []
        remote, self._remote_buf = self._remote_buf, []
        if self.role != LEADER:
            for _, _, fut in local:
                if not fut.done():
                    fut.set_exception(NoLeaderError("leadership changed before the proposal"))
            for req in remote:
                self._send(
                    req.src, ProposeResp(self.term, self.id, req.req_id, 0, 0, ERR_NOT_LEADER)
                )
            return
        index = self.last_index + 1
        term = self.term
        entries: list[LogEntry] = []
        config_busy = self._configs[-1][0] > self.commit_index
        for kind, data, fut in local:
            if fut.done():
                continue
            if kind == CONFIG:
                if config_busy:
                    fut.set_exception(RaftError("another membership change is in progress"))
                    continue
                config_busy = True
            entries.append(LogEntry.make(index, term, kind, data))
            self._waiters[index] = (term, fut)
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
            if not self._progress:
                self._maybe_commit()

    def _on_propose(self, m: Propose) -> None:
        if self.role != LEADER:
            self._send(m.src, ProposeResp(self.term, self.id, m.req_id, 0, 0, ERR_NOT_LEADER))
            return
        if m.kind == CONFIG:
            task = asyncio.get_running_loop().create_task(self._serve_change(m))
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)
            return
        self._remote_buf.append(m)
        self._schedule_flush()

    def _flush_forwards(self) -> None:
        self._fwd_scheduled = False
        buf, self._fwd_buf = self._fwd_buf, []
        buf = [item for item in buf if not item[2].done()]
        if not buf:
            return
        leader = self._leader_id
        normal = [item for item in buf if item[0] == NORMAL]
        changes = [item for item in buf if item[0] != NORMAL]
        if leader is None or leader == self.id:
            if leader == self.id:  # became leader meanwhile: propose locally
                self._prop_buf.extend(normal)
                self._flush_proposals()
            for _, _, fut in changes if leader == self.id else buf:
                fut.set_exception(NoLeaderError("leader changed before forwarding; retry"))
            return
        # all commands in one message; each membership change in its own
        for kind, group in [(NORMAL, normal)] + [(CONFIG, [c]) for c in changes]:
            if not group:
                continue
            req_id = next(self._counter)
            self._fwd_reqs[req_id] = [fut for _, _, fut in group]
            self._send(leader, Propose(self.term, self.id, req_id, kind, [d for _, d, _ in group]))

    def _on_propose_resp(self, m: ProposeResp) -> None:
        futs = self._fwd_reqs.pop(m.req_id, None)
        if futs is None:
            return
        if m.error != ERR_NONE:
            exc: RaftError = (
                NoLeaderError(f"{m.src} is no longer the leader")
                if m.error == ERR_NOT_LEADER
                else RaftError(f"the leader {m.src} refused the request (code {m.error})")
            )
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc)
            return
        if m.entry_term == 0:  # a membership change: done once applied up to first_index
            for fut in futs:
                if self.applied_index >= m.first_index:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    heapq.heappush(self._apply_waiters, (m.first_index, next(self._counter), fut))
            return
        for i, fut in enumerate(futs):
            index = m.first_index + i
            if index > self.applied_index:
                self._waiters[index] = (m.entry_term, fut)
                continue
            # applied before the leader's answer arrived (possible with reordering)
            got = self._recent.get(index)
            if fut.done():
                continue
            if got is not None and got[0] == m.entry_term:
                fut.set_result(got[1])
            elif got is not None:
                fut.set_exception(ProposalDroppedError("entry overwritten by a new leader"))
            else:
                fut.set_exception(ProposalTimeoutError("outcome unknown (compacted meanwhile)"))

    # --- reads ---------------------------------------------------------------------------

    async def _leader_read_index(self) -> int:
        while self.is_leader and self.applied_index < self._term_start:
            await self._wait_applied(self._term_start)
        if not self.is_leader:
            raise NoLeaderError("leadership lost during a read")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._reads.append((self._hb_seq + 1, self.commit_index, fut))
        if not self._broadcast_scheduled:
            self._broadcast_scheduled = True
            loop.call_soon(self._broadcast_heartbeat)
        return await fut

    def _resolve_reads(self) -> None:
        seqs = [pr.hb_seq for p, pr in self._progress.items() if p in self.members]
        if self.id in self.members:
            seqs.append(self._hb_seq)
        seqs.sort(reverse=True)
        acked = seqs[self._quorum() - 1] if len(seqs) >= self._quorum() else 0
        keep = []
        for need, index, fut in self._reads:
            if fut.done():
                continue
            if need <= acked:
                fut.set_result(index)
            else:
                keep.append((need, index, fut))
        self._reads = keep

    def _flush_fwd_reads(self) -> None:
        self._fwd_reads_scheduled = False
        futs, self._fwd_reads = [f for f in self._fwd_reads if not f.done()], []
        if not futs:
            return
        leader = self._leader_id
        if leader is None or leader == self.id:
            for f in futs:
                f.set_exception(NoLeaderError("leader changed during a read"))
            return
        req_id = next(self._counter)
        self._read_reqs[req_id] = futs
        self._send(leader, ReadReq(self.term, self.id, req_id))

    def _on_read_req(self, m: ReadReq) -> None:
        if self.role != LEADER:
            self._send(m.src, ReadResp(self.term, self.id, m.req_id, 0, ERR_NOT_LEADER))
            return
        task = asyncio.get_running_loop().create_task(self._serve_read(m))
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        for tasks in (self._tasks, self._disk_tasks):
            with contextlib.suppress(ValueError):
                tasks.remove(task)

    async def _serve_read(self, m: ReadReq) -> None:
        try:
            async with asyncio.timeout(self.config.election_timeout[1] * 4):
                index = await self._leader_read_index()
        except (RaftError, TimeoutError):
            self._send(m.src, ReadResp(self.term, self.id, m.req_id, 0, ERR_NOT_LEADER))
            return
        self._send(m.src, ReadResp(self.term, self.id, m.req_id, index, ERR_NONE))

    def _on_read_resp(self, m: ReadResp) -> None:
        futs = self._read_reqs.pop(m.req_id, None)
        for f in futs or ():
            if f.done():
                continue
            if m.error == ERR_NONE:
                f.set_result(m.index)
            else:
                f.set_exception(NoLeaderError(f"{m.src} is no longer the leader"))

    async def _wait_applied(self, index: int) -> None:
        if self.applied_index >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._apply_waiters, (index, next(self._counter), fut))
        await fut

    # --- apply ---------------------------------------------------------------------------

    def _apply(self) -> None:
        while True:
            hi = min(self.commit_index, self._durable, self.applied_index + APPLY_BATCH)
            if hi <= self.applied_index:
                break
            lo = self.applied_index + 1
            entries = self._log[lo - self._snap_index - 1 : hi - self._snap_index]
            normal = [Entry(e.index, e.term, e.data) for e in entries if e.kind == NORMAL]
            t0 = time.perf_counter()
            try:
                results = self.sm.apply(normal) if normal else []
            except Exception as exc:
                # A state machine answers a failing command with a result; one that raises
                # has a bug, and retrying the same entries would fail the same way forever
                # while every write waits silently. Stop instead, where it shows.
                self._halt(f"applying entries {lo}-{hi} raised {type(exc).__name__}: {exc}")
                raise
            if self._metrics:
                self._metrics.apply.observe(time.perf_counter() - t0)
                self._metrics.committed.inc(len(normal))
            self.applied_index = hi
            if self._waiters or self._fwd_reqs:
                self._deliver(entries, results)
        if self._metrics:
            self._metrics.applied_index.set(self.applied_index)
        while self._apply_waiters and self._apply_waiters[0][0] <= self.applied_index:
            _, _, fut = heapq.heappop(self._apply_waiters)
            if not fut.done():
                fut.set_result(None)
        if self.applied_index - self._snap_index >= self.config.snapshot_threshold:
            self._maybe_snapshot()
        removed = self.id not in self.members and self._configs[-1][0] <= self.commit_index
        if self.role == LEADER and removed:
            log.info("%s: removed from the cluster; stepping down", self.id)
            self._become_follower(self.term, None)

    def _deliver(self, entries: list[LogEntry], results: list[Any]) -> None:
        it = iter(results)
        remember = bool(self._fwd_reqs)
        for e in entries:
            res = next(it) if e.kind == NORMAL else None
            if remember:
                self._recent[e.index] = (e.term, res)
            w = self._waiters.pop(e.index, None)
            if w is None or w[1].done():
                continue
            if w[0] == e.term:
                w[1].set_result(res)
            else:
                w[1].set_exception(ProposalDroppedError("entry overwritten by a new leader"))

    # --- snapshots -----------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if self._snapshotting or self._stopped:
            return
        self._snapshotting = True
        index = self.applied_index
        term = self._term_at(index)
        assert term is not None
        meta = SnapshotMeta(index, term, self._members_at(index))
        data = self.sm.snapshot()  # same tick as the apply: exactly the state at `index`
        task = asyncio.get_running_loop().create_task(self._save_snapshot(meta, data))
        self._disk_tasks.append(task)
        task.add_done_callback(self._forget_task)

    async def _save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        try:
            await self._storage.save_snapshot(meta, data)
            if meta.index > self._snap_index:
                self._compact_memory(meta)
            log.info("%s: snapshot at %d (%d bytes), log compacted", self.id, meta.index, len(data))
        except Exception:
            log.exception("%s: snapshot at %d failed", self.id, meta.index)
        finally:
            self._snapshotting = False

    def _compact_memory(self, meta: SnapshotMeta) -> None:
        del self._log[: meta.index - self._snap_index]
        self._snap_index, self._snap_term = meta.index, meta.term
        later = [c for c in self._configs if c[0] > meta.index]
        self._configs = [(meta.index, meta.members), *later]

    def _start_snapshot_send(self, peer: str, pr: _Progress) -> None:
        meta, data = self._storage.read_snapshot()
        if meta is None:
            log.error("%s: %s needs a snapshot but none is stored", self.id, peer)
            return
        log.info("%s: sending snapshot %d (%d bytes) to %s", self.id, meta.index, len(data), peer)
        pr.snap = _SnapSend(meta, data)
        self._send_snapshot_chunk(peer, pr)

    def _send_snapshot_chunk(self, peer: str, pr: _Progress) -> None:
        s = pr.snap
        assert s is not None
        chunk = s.data[s.offset : s.offset + self.config.snapshot_chunk]
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
        s.last_sent = self._now()

    def _on_snapshot_resp(self, m: SnapshotResp) -> None:
        pr = self._progress.get(m.src)
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
        if self._snapshotting:
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
        log.info("%s: installing snapshot %d/%d from the leader", self.id, meta.index, meta.term)
        keep = self._term_at(meta.index) == meta.term
        with self._disk("installing a snapshot"):
            self._storage.write_snapshot(meta, data)
            if keep:
                self._storage.compact(meta.index)
            else:
                self._storage.reset(meta.index + 1)
        if keep:
            self._compact_memory(meta)
        else:
            self._log = []
            self._snap_index, self._snap_term = meta.index, meta.term
            self._configs = [(meta.index, meta.members)]
            self._durable = meta.index
            self._trunc_floor = meta.index + 1
            self._transport.update_peers(meta.members)
        self.sm.restore(data, meta.index)
        self.applied_index = max(self.applied_index, meta.index)
        self._set_commit(meta.index)
        for i in [i for i in self._waiters if i <= meta.index]:
            _t, fut = self._waiters.pop(i)
            if not fut.done():
                fut.set_exception(ProposalTimeoutError("outcome unknown (replaced by a snapshot)"))
        self._apply()

    def _update_gauges(self) -> None:
        if self._metrics:
            self._metrics.term.set(self.term)
            self._metrics.commit_index.set(self.commit_index)
            self._metrics.applied_index.set(self.applied_index)
