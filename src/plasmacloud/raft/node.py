"""The Raft node: the asyncio driver of the consensus core (:mod:`plasmacloud.raft.core`).

The core holds the Raft state and rules (elections with pre-vote and check-quorum,
pipelined replication, ReadIndex, snapshots, single-server membership changes) and does no
I/O. This driver feeds it ticks from a timer, messages from a
:class:`~plasmacloud.raft.transport.Transport` and the service's proposals and reads, then
does what the core's :class:`~plasmacloud.raft.core.Ready` asks: saves the hard state,
writes the log through :class:`~plasmacloud.raft.storage.Storage` on a
:class:`~plasmacloud.raft.disk.Disk`, sends messages and applies committed entries to the
:class:`~plasmacloud.raft.api.StateMachine`. It also owns what involves waiting: the futures
of callers, forwarding to the leader, group commit and snapshots written off the loop. The
deterministic simulation (:mod:`plasmacloud.raft.sim`) steps the core directly, and runs this
driver around it on a virtual clock too (``driver=True``).

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from plasmacloud.raft import persist
from plasmacloud.raft.api import (
    Entry,
    LeaderLostError,
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
    ERR_NONE,
    ERR_NOT_LEADER,
    NORMAL,
    CodecError,
    LogEntry,
    Message,
    Propose,
    ProposeResp,
    ReadReq,
    ReadResp,
    SnapshotMeta,
    decode_members,
    encode_members,
)
from plasmacloud.raft.core import (
    LEADER,
    SNAPSHOT_CHUNK,
    Append,
    RaftCore,
    Ready,
    Truncate,
    election_ticks,
)
from plasmacloud.raft.disk import Disk, OsDisk
from plasmacloud.raft.metrics import RaftMetrics
from plasmacloud.raft.storage import Storage
from plasmacloud.raft.transport import TcpTransport, Transport

log = logging.getLogger(__name__)


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
    heartbeat_interval: float = 0.05  # one tick of the core
    snapshot_threshold: int = 10_000  # applied entries between snapshots / log compactions
    registry: CollectorRegistry | None = None  # if given, raft metrics are registered there
    snapshot_chunk: int = SNAPSHOT_CHUNK


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
        self.core = RaftCore(
            config.node_id,
            election_ticks=election_ticks(config.election_timeout, config.heartbeat_interval),
            rng=rng or random.Random(),
            snapshot_chunk=config.snapshot_chunk,
        )
        self._metrics = RaftMetrics(config.registry) if config.registry is not None else None
        self._listeners: list[Callable[[str | None, int], None]] = []
        self._leader_known = asyncio.Event()

        # proposals and waiters
        self._prop_buf: list[tuple[int, bytes, asyncio.Future[Any]]] = []
        self._remote_buf: list[Propose] = []
        self._flush_scheduled = False
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
        # request id (of _fwd_reqs and _read_reqs) -> the leader it was sent to: a request
        # whose leader is replaced fails at once, not at its caller's deadline (a dead
        # leader never answers)
        self._fwd_leader: dict[int, str] = {}
        self._broadcast_scheduled = False
        self._commit_notify_scheduled = False

        self._tasks: list[asyncio.Task[Any]] = []  # cancelled on stop
        self._disk_tasks: list[asyncio.Task[Any]] = []  # drained on stop (fsync, snapshot)
        self._sync_wanted = asyncio.Event()
        self._started = False
        self._stopped = False

    # --- the core's state, read-only here ------------------------------------------------

    @property
    def term(self) -> int:
        return self.core.term

    @property
    def voted_for(self) -> str:
        return self.core.voted_for

    @property
    def role(self) -> str:
        return self.core.role

    @property
    def commit_index(self) -> int:
        return self.core.commit_index

    @property
    def applied_index(self) -> int:
        return self.core.applied_index

    @property
    def last_index(self) -> int:
        return self.core.last_index

    @property
    def members(self) -> dict[str, str]:
        return self.core.members

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from storage, start the transport and timers."""
        if self._started:
            return
        self._started = True
        core = self.core
        persist.load(self._storage, core, self.config.members if self.config.bootstrap else {})
        await self._storage.sync()  # what a crashed process left in the page cache
        core.start(persist.recover_state_machine(self._storage, core, self.sm))
        log.info(
            "%s: recovered term %d, snapshot %d, log %d..%d, applied %d, members %s",
            self.id,
            core.term,
            core.snap_index,
            core.snap_index + 1,
            core.last_index,
            core.applied_index,
            sorted(core.members),
        )
        await self._transport.start(self._on_message)
        # a joining node is not a member yet but must reach the cluster it joins
        self._transport.update_peers({**self.config.members, **core.members})
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._ticker()))
        self._disk_tasks.append(loop.create_task(self._syncer()))
        self._update_gauges()

    async def stop(self, *, handover: bool = True) -> None:
        """Stop timers, transport and storage; fail everything pending. Idempotent.

        A leader first hands leadership to its most up-to-date follower (``handover``), so a
        graceful restart costs the cluster a round trip instead of an election timeout."""
        if self._stopped:
            return
        if handover and self.is_leader and self.core.members.keys() - {self.id}:
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
        self.core.step_down()
        for leader, term in self.core.ready().leader_changes:
            self._on_leader_change(leader, term)

    def _fail_all(self, exc: Exception) -> None:
        futs: list[asyncio.Future[Any]] = [f for _, _, f in self._prop_buf]
        futs += [f for _, _, f in self._fwd_buf]
        futs += [f for _, f in self._waiters.values()]
        futs += [f for _, _, f in self._apply_waiters]
        futs += [f for fs in self._fwd_reqs.values() for f in fs]
        futs += [f for fs in self._read_reqs.values() for f in fs]
        futs += self.core.drop_reads()
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
        self._fwd_leader.clear()
        self._fwd_reads.clear()

    # --- public API ----------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.core.role == LEADER

    @property
    def leader_id(self) -> str | None:
        return self.core.leader_id

    async def transfer_leadership(
        self, timeout: float | None = None, to: str | None = None
    ) -> str | None:
        """Best effort: make follower ``to`` (default: the most up-to-date one) leader
        (thesis 3.10). Returns the leader afterwards (None if unknown); never raises for a
        transfer that did not happen."""
        loop = asyncio.get_running_loop()
        wait = self.config.heartbeat_interval / 5
        try:
            async with asyncio.timeout(timeout or self.config.election_timeout[1] * 2):
                while self.is_leader:
                    target, handed = self.core.transfer_step(to)
                    self._process()
                    if target is None:
                        return self.id
                    if handed:
                        deadline = loop.time() + self.config.election_timeout[0]
                        while self.is_leader and loop.time() < deadline:
                            await asyncio.sleep(wait)
                    else:
                        await asyncio.sleep(wait)
                while self.leader_id is None:  # stepped down; learn who took over
                    await self._leader_known.wait()
        except TimeoutError:
            log.warning("%s: leadership transfer did not complete", self.id)
        return self.leader_id

    def add_leader_listener(self, cb: Callable[[str | None, int], None]) -> None:
        """Call ``cb(leader_id, term)`` whenever the known leader changes."""
        self._listeners.append(cb)

    def status(self) -> RaftStatus:
        core = self.core
        return RaftStatus(
            node_id=self.id,
            role=core.role,
            term=core.term,
            leader_id=core.leader_id,
            commit_index=core.commit_index,
            applied_index=core.applied_index,
            last_log_index=core.last_index,
            snapshot_index=core.snap_index,
            members=tuple(Member(n, a) for n, a in sorted(core.members.items())),
        )

    async def wait_for_leader(self, timeout: float = 10.0) -> str:
        """Wait until some leader is known and return its id."""
        try:
            async with asyncio.timeout(timeout):
                while self.core.leader_id is None:
                    await self._leader_known.wait()
        except TimeoutError:
            raise NoLeaderError(f"no leader elected within {timeout}s") from None
        return self.core.leader_id

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        """Replicate ``data``; return the state machine's result for it once applied here."""
        return await self._propose(NORMAL, data, timeout)

    async def _propose(self, kind: int, data: bytes, timeout: float) -> Any:
        if self._stopped or not self._started:
            raise ShutdownError("raft node is not running")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.leader_id is None:
            await self.wait_for_leader(timeout)
        fut: asyncio.Future[Any] = loop.create_future()
        if self.is_leader:
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
                if self.leader_id is None:
                    await self.wait_for_leader(timeout)
                if self.is_leader:
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
        if self.leader_id is None:
            await self.wait_for_leader(timeout)
        if self.is_leader:
            await self._change_config(node_id, address, timeout)
        else:  # the leader makes the change and answers with a commit index to wait for
            await self._propose(CONFIG, _encode_change(node_id, address), timeout)

    async def _change_config(self, node_id: str, address: str | None, timeout: float) -> None:
        core = self.core
        try:
            async with asyncio.timeout(timeout):
                # one change at a time, and only once this leader's term has a committed entry
                while self.is_leader and (
                    core.config_index > core.commit_index or core.commit_index < core.term_start
                ):
                    await self._wait_applied(max(core.config_index, core.term_start))
        except TimeoutError:
            raise ProposalTimeoutError("a previous membership change did not commit") from None
        if not self.is_leader:
            raise NotLeaderError(core.leader_id, core.members.get(core.leader_id or ""))
        new = dict(core.members)
        if address is None:
            new.pop(node_id, None)
        else:
            new[node_id] = address
        if new == core.members:
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
        index = self.core.commit_index if error == ERR_NONE else 0
        self._send(m.src, ProposeResp(self.core.term, self.id, m.req_id, index, 0, error))

    # --- feeding the core and doing what it asks ------------------------------------------

    def _process(self) -> None:
        persist.drain(self.core, self._handle_ready, self._apply)

    def _handle_ready(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            with self._disk("saving term and vote"):
                self._storage.save_hard_state(rd.hard_state)
            if self._metrics:
                self._metrics.term.set(rd.hard_state.term)
        for w in rd.log_writes:
            with self._disk(persist.WRITE_NAMES[type(w)]):
                persist.write_log(self._storage, w)
            if isinstance(w, Append):
                self._sync_wanted.set()
            elif isinstance(w, Truncate):
                dropped = ProposalDroppedError("entry overwritten by a new leader")
                self._fail_waiters([i for i in self._waiters if i >= w.index], dropped)
            else:
                self.sm.restore(w.data, w.meta.index)
                if self._metrics:
                    self._metrics.snapshot_index.set(w.meta.index)
                unknown = ProposalTimeoutError("outcome unknown (replaced by a snapshot)")
                self._fail_waiters([i for i in self._waiters if i <= w.meta.index], unknown)
        if rd.members_changed:
            self._transport.update_peers(self.core.members)
        for to, msg in rd.messages:
            self._send(to, msg)
        for leader, term in rd.leader_changes:
            self._on_leader_change(leader, term)
        for fut, index in rd.read_states:
            if not fut.done():
                fut.set_result(index)
        for fut in rd.failed_reads:
            if not fut.done():
                fut.set_exception(NoLeaderError("leadership lost during a read"))
        if rd.read_round_due:
            self._schedule_broadcast()
        for peer in rd.snapshots_wanted:
            self._send_snapshot(peer)
        leading = self.is_leader
        if rd.commit_advanced and self._metrics:
            self._metrics.commit_index.set(self.core.commit_index)
        if (rd.stepped_down or (rd.commit_advanced and leading)) and (
            self._prop_buf or self._remote_buf
        ):
            self._schedule_flush()  # refuse held proposals, or send those held behind a batch
        if rd.commit_advanced and leading and not self._commit_notify_scheduled:
            self._commit_notify_scheduled = True
            asyncio.get_running_loop().call_soon(self._notify_commit)

    def _on_message(self, msg: Message) -> None:
        if self._stopped:
            return
        try:
            if isinstance(msg, Propose):
                self._on_propose(msg)
            elif isinstance(msg, ProposeResp):
                self._on_propose_resp(msg)
            elif isinstance(msg, ReadReq):
                self._on_read_req(msg)
            elif isinstance(msg, ReadResp):
                self._on_read_resp(msg)
            else:
                self.core.step(msg)
            self._process()
        except Exception:
            log.exception("%s: failed to handle %s from %s", self.id, type(msg).__name__, msg.src)

    def _send(self, to: str, msg: Message) -> None:
        self._transport.send(to, msg)

    def _on_leader_change(self, leader: str | None, term: int) -> None:
        self._fail_forwards_not_to(leader)
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
                cb(leader, term)
            except Exception:
                log.exception("%s: leader listener failed", self.id)

    def _fail_forwards_not_to(self, leader: str | None) -> None:
        for rid in [r for r, sent_to in self._fwd_leader.items() if sent_to != leader]:
            del self._fwd_leader[rid]
            proposals = self._fwd_reqs.pop(rid, ())
            reads = self._read_reqs.pop(rid, ())
            for fut in proposals:
                if not fut.done():
                    fut.set_exception(LeaderLostError(f"leader changed: outcome unknown ({rid})"))
            for read in reads:
                if not read.done():
                    read.set_exception(NoLeaderError("leader changed during a read"))

    def _notify_commit(self) -> None:
        self._commit_notify_scheduled = False
        self.core.notify_commit()
        self._process()

    def _schedule_broadcast(self) -> None:
        if not self._broadcast_scheduled:
            self._broadcast_scheduled = True
            asyncio.get_running_loop().call_soon(self._broadcast_heartbeat)

    def _broadcast_heartbeat(self) -> None:
        self._broadcast_scheduled = False
        self.core.broadcast_heartbeat()
        self._process()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                self.core.tick()
                self._process()
                self._forget_finished_forwards()
            except Exception:
                log.exception("%s: tick failed", self.id)

    def _forget_finished_forwards(self) -> None:
        if self._fwd_reqs:  # forget forwards whose callers are gone (timed out)
            for rid in [r for r, fs in self._fwd_reqs.items() if all(f.done() for f in fs)]:
                del self._fwd_reqs[rid]
                self._fwd_leader.pop(rid, None)
        if not self._fwd_reqs:
            self._recent.clear()
        elif len(self._recent) > 50_000:  # a forward never waits that long
            floor = self.core.applied_index - 10_000
            self._recent = {i: r for i, r in self._recent.items() if i > floor}

    async def _syncer(self) -> None:
        """Group commit: one fdatasync covers every append made before it started."""
        while not self._stopped:
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            if self._stopped:
                continue
            target = self.core.sync_begin()
            if target is None:
                continue
            t0 = time.perf_counter()
            with self._disk("log fdatasync"):
                await self._storage.sync()
            if self._stopped:
                return
            if self._metrics:
                self._metrics.fsync.observe(time.perf_counter() - t0)
            try:
                more = self.core.synced(target)
                self._process()
            except Exception:
                log.exception("%s: handling fsync completion failed", self.id)
                more = self.core.durable < self.core.last_index
            if more:
                self._sync_wanted.set()

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

    def _fail_waiters(self, indexes: list[int], exc: RaftError) -> None:
        for i in indexes:
            _term, fut = self._waiters.pop(i)
            if not fut.done():
                fut.set_exception(exc)

    # --- proposals -----------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_proposals)

    def _flush_proposals(self) -> None:
        self._flush_scheduled = False
        if self.is_leader and self.core.proposals_held():
            return  # a commit flushes again once the oldest batch commits
        local, self._prop_buf = self._prop_buf, []
        remote, self._remote_buf = self._remote_buf, []
        if not self.is_leader:
            for _, _, fut in local:
                if not fut.done():
                    fut.set_exception(NoLeaderError("leadership changed before the proposal"))
            for req in remote:
                self._refuse(req)
            return
        local = [item for item in local if not item[2].done()]
        indexes = self.core.append_proposals([(k, d) for k, d, _ in local], remote)
        term = self.core.term
        for (_, _, fut), index in zip(local, indexes, strict=True):
            if index is None:
                fut.set_exception(RaftError("another membership change is in progress"))
            else:
                self._waiters[index] = (term, fut)
        self._process()

    def _refuse(self, req: Propose) -> None:
        resp = ProposeResp(self.core.term, self.id, req.req_id, 0, 0, ERR_NOT_LEADER)
        self._send(req.src, resp)

    def _on_propose(self, m: Propose) -> None:
        if not self.is_leader:
            self._refuse(m)
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
        leader = self.leader_id
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
            self._fwd_leader[req_id] = leader
            datas = [d for _, d, _ in group]
            self._send(leader, Propose(self.core.term, self.id, req_id, kind, datas))

    def _on_propose_resp(self, m: ProposeResp) -> None:
        futs = self._fwd_reqs.pop(m.req_id, None)
        self._fwd_leader.pop(m.req_id, None)
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
        applied = self.core.applied_index
        if m.entry_term == 0:  # a membership change: done once applied up to first_index
            for fut in futs:
                if applied >= m.first_index:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    heapq.heappush(self._apply_waiters, (m.first_index, next(self._counter), fut))
            return
        for i, fut in enumerate(futs):
            index = m.first_index + i
            if index > applied:
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
        if not self.is_leader:
            raise NoLeaderError("leadership lost during a read")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        if self.core.read_index(fut):
            self._schedule_broadcast()
        return await fut

    def _flush_fwd_reads(self) -> None:
        self._fwd_reads_scheduled = False
        futs, self._fwd_reads = [f for f in self._fwd_reads if not f.done()], []
        if not futs:
            return
        leader = self.leader_id
        if leader is None or leader == self.id:
            for f in futs:
                f.set_exception(NoLeaderError("leader changed during a read"))
            return
        req_id = next(self._counter)
        self._read_reqs[req_id] = futs
        self._fwd_leader[req_id] = leader
        self._send(leader, ReadReq(self.core.term, self.id, req_id))

    def _on_read_req(self, m: ReadReq) -> None:
        if not self.is_leader:
            self._send(m.src, ReadResp(self.core.term, self.id, m.req_id, 0, ERR_NOT_LEADER))
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
            self._send(m.src, ReadResp(self.core.term, self.id, m.req_id, 0, ERR_NOT_LEADER))
            return
        self._send(m.src, ReadResp(self.core.term, self.id, m.req_id, index, ERR_NONE))

    def _on_read_resp(self, m: ReadResp) -> None:
        futs = self._read_reqs.pop(m.req_id, None)
        self._fwd_leader.pop(m.req_id, None)
        for f in futs or ():
            if f.done():
                continue
            if m.error == ERR_NONE:
                f.set_result(m.index)
            else:
                f.set_exception(NoLeaderError(f"{m.src} is no longer the leader"))

    async def _wait_applied(self, index: int) -> None:
        if self.core.applied_index >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._apply_waiters, (index, next(self._counter), fut))
        await fut

    # --- apply ---------------------------------------------------------------------------

    def _apply(self) -> None:
        core = self.core
        while entries := core.committed_batch():
            lo, hi = entries[0].index, entries[-1].index
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
            core.applied_to(hi)
            if self._waiters or self._fwd_reqs:
                self._deliver(entries, results)
        if self._metrics:
            self._metrics.applied_index.set(core.applied_index)
        while self._apply_waiters and self._apply_waiters[0][0] <= core.applied_index:
            _, _, fut = heapq.heappop(self._apply_waiters)
            if not fut.done():
                fut.set_result(None)
        if core.applied_index - core.snap_index >= self.config.snapshot_threshold:
            self._maybe_snapshot()
        core.step_down_if_removed()

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
        if self.core.local_snapshot_in_progress or self._stopped:
            return
        self.core.local_snapshot_in_progress = True
        meta = self.core.snapshot_meta(self.core.applied_index)
        try:
            read = self.sm.snapshot_reader()  # same tick as the apply: the state at `index`
        except Exception:
            self.core.local_snapshot_in_progress = False
            log.exception("%s: could not pin a snapshot at %d", self.id, meta.index)
            return
        task = asyncio.get_running_loop().create_task(self._save_snapshot(meta, read))
        self._disk_tasks.append(task)
        task.add_done_callback(self._forget_task)

    async def _save_snapshot(self, meta: SnapshotMeta, read: Callable[[], bytes]) -> None:
        try:
            size = await self._storage.save_snapshot(meta, read)
            self.core.compact(meta)
            log.info("%s: snapshot at %d (%d bytes), log compacted", self.id, meta.index, size)
            if self._metrics:
                self._metrics.snapshots.inc()
                self._metrics.snapshot_index.set(meta.index)
        except Exception:
            log.exception("%s: snapshot at %d failed", self.id, meta.index)
        finally:
            self.core.local_snapshot_in_progress = False

    def _send_snapshot(self, peer: str) -> None:
        meta, data = self._storage.read_snapshot()
        if meta is None:
            log.error("%s: %s needs a snapshot but none is stored", self.id, peer)
            return
        self.core.send_snapshot(peer, meta, data)

    def _update_gauges(self) -> None:
        if self._metrics:
            self._metrics.term.set(self.core.term)
            self._metrics.commit_index.set(self.core.commit_index)
            self._metrics.applied_index.set(self.core.applied_index)
            self._metrics.snapshot_index.set(self.core.snap_index)
