"""Deterministic, seeded simulation of a Raft cluster: the consensus core
(:class:`~plasmacloud.raft.core.RaftCore`) stepped directly on a virtual clock (no asyncio),
with the real storage code on simulated disks that forget un-synced writes and tear the last
one when a machine crashes, and an in-memory network (drops, delays, reordering, duplicates,
partitions) that passes every message through the real codec.

One seed = one reproducible run. The run checks election safety (at most one leader per
term), log matching, leader completeness, state-machine safety (no two nodes apply different
commands at an index), linearizable ReadIndex, and that every acknowledged proposal is applied
everywhere once the faults heal. Replay a seed with::

    python -m plasmacloud.raft.sim --seed 1234 [-v]

With ``driver=True`` (``--driver``) the same seeds run the asyncio driver
(:class:`~plasmacloud.raft.node.RaftNode`) around the core instead, on an event loop with a
virtual clock (:class:`SimLoop`, :class:`SimTransport`), under the same faults and checks; the
targeted scenario tests use those pieces too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import selectors
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from plasmacloud.raft import persist
from plasmacloud.raft.api import Entry, RaftError
from plasmacloud.raft.codec import (
    CONFIG,
    NORMAL,
    Message,
    SnapshotMeta,
    check_frame,
    decode_frame_header,
    encode_frame,
    encode_members,
)
from plasmacloud.raft.core import (
    LEADER,
    Append,
    Install,
    RaftCore,
    Ready,
    Truncate,
    election_ticks,
)
from plasmacloud.raft.memory import MemoryStateMachine
from plasmacloud.raft.node import RaftConfig, RaftNode
from plasmacloud.raft.storage import Storage
from plasmacloud.raft.transport import Handler

log = logging.getLogger(__name__)


# --- virtual time ----------------------------------------------------------------------


class _TimeWarp(selectors.BaseSelector):
    """A selector with no file descriptors: "waiting" just moves the virtual clock."""

    def __init__(self, loop: SimLoop) -> None:
        self.loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing scheduled")
        self.loop.now += timeout
        return []

    def register(self, fileobj: Any, events: int, data: Any = None) -> Any:
        raise NotImplementedError("no real I/O in the simulation")

    def unregister(self, fileobj: Any) -> Any:
        raise NotImplementedError("no real I/O in the simulation")

    def get_map(self) -> Any:
        return {}


class SimLoop(asyncio.BaseEventLoop):
    """An event loop whose clock only advances when every task is waiting (no real time)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _TimeWarp(self)

    def time(self) -> float:
        return self.now

    def _process_events(self, event_list: Any) -> None:
        pass

    def _write_to_self(self) -> None:
        pass


# --- disk ------------------------------------------------------------------------------


@dataclass
class _FileState:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    # bumped by every write and truncate: a sync that completes after a newer one (an
    # fdatasync in a worker thread overtaken by a segment roll's blocking sync) must not
    # make the file's durable contents go back in time, which no real disk does
    version: int = 0
    durable_version: int = 0

    def make_durable(self, data: bytes, version: int) -> None:
        """The contents as of ``version`` reached the disk (unless newer ones already did)."""
        if version >= self.durable_version:
            self.durable = data
            self.durable_version = version


class SimDisk:
    """A machine's disk: files in memory; :meth:`crash` keeps only what was synced (plus
    maybe a torn tail). Each boot uses it through a :class:`SimMount`."""

    def __init__(self, rng: random.Random, sync_delay: tuple[float, float]) -> None:
        self.rng = rng
        self.sync_delay = sync_delay
        self.files: dict[str, _FileState] = {}
        self.torn_writes = 0
        self.epoch = 0  # bumped by each crash

    def mount(self) -> SimMount:
        return SimMount(self)

    def crash(self) -> None:
        """Lose every un-synced write; sometimes leave a torn (partial or garbled) tail."""
        self.epoch += 1
        for st in self.files.values():
            unsynced = bytes(st.data[len(st.durable) :])
            extends = bytes(st.data[: len(st.durable)]) == st.durable
            tail = b""
            if unsynced and extends and self.rng.random() < 0.5:
                tail = unsynced[: self.rng.randrange(1, len(unsynced) + 1)]
                if self.rng.random() < 0.3:
                    tail = tail[:-1] + bytes([tail[-1] ^ 0xFF])
                self.torn_writes += 1
            st.data = bytearray(st.durable + tail)


class SimMount:
    """The :class:`~plasmacloud.raft.disk.Disk` one boot of a node sees. After the machine
    crashes, every operation of that boot fails (a dead process does no more I/O), including
    an fsync or snapshot write that was in flight at the crash."""

    def __init__(self, disk: SimDisk) -> None:
        self.disk = disk
        self.epoch = disk.epoch

    def check(self) -> dict[str, _FileState]:
        if self.epoch != self.disk.epoch:
            raise OSError("simulated machine crashed")
        return self.disk.files

    def makedirs(self, path: str) -> None:
        self.check()

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted(p[len(prefix) :] for p in self.check() if p.startswith(prefix))

    def read(self, path: str) -> bytes:
        return bytes(self.check()[path].data)

    def exists(self, path: str) -> bool:
        return path in self.check()

    def remove(self, path: str) -> None:
        self.check().pop(path, None)

    def open_append(self, path: str) -> SimFile:
        return SimFile(self, self.check().setdefault(path, _FileState()))

    def sync_dir(self, path: str) -> None:
        self.check()

    async def datasync(self, files: Sequence[Any]) -> None:
        captured = self.begin_sync(files)
        await asyncio.sleep(self.sync_delay())
        self.end_sync(captured)

    def sync_delay(self) -> float:
        return self.disk.rng.uniform(*self.disk.sync_delay)

    def begin_sync(self, files: Sequence[Any]) -> list[tuple[_FileState, bytes, int]]:
        """An fdatasync starts: it covers what is written now."""
        self.check()
        return [(f.state, bytes(f.state.data), f.state.version) for f in files]

    def end_sync(self, captured: list[tuple[_FileState, bytes, int]]) -> None:
        self.check()
        for st, data, version in captured:
            st.make_durable(data, version)  # what was written when the sync began

    def write_atomic(self, path: str, data: bytes) -> None:
        self.check()[path] = _FileState(bytearray(data), bytes(data))

    async def write_atomic_async(self, path: str, produce: Callable[[], bytes]) -> None:
        self.check()
        await asyncio.sleep(self.sync_delay())
        self.write_atomic(path, produce())

    def close(self) -> None:
        """Nothing runs in the background: a sync is a timer on the simulation's loop."""


class SimFile:
    """An open file: bound to the file itself, not its name (after an unlink, and maybe a
    new file under the same name, this handle still refers to the old nameless file)."""

    def __init__(self, mount: SimMount, state: _FileState) -> None:
        self.mount = mount
        self.state = state

    def write(self, data: bytes) -> None:
        self.mount.check()
        self.state.data.extend(data)
        self.state.version += 1

    def truncate(self, size: int) -> None:
        self.mount.check()
        del self.state.data[size:]
        self.state.version += 1

    def size(self) -> int:
        return len(self.state.data)

    def sync(self) -> None:
        self.mount.check()
        self.state.make_durable(bytes(self.state.data), self.state.version)

    def close(self) -> None:
        pass


# --- network ---------------------------------------------------------------------------


class SimNetwork:
    """Delivers encoded frames after random delays; can drop, duplicate and partition."""

    def __init__(
        self,
        rng: random.Random,
        delay: tuple[float, float],
        limit: int = 100_000,
        call_later: Callable[..., object] | None = None,
    ) -> None:
        self.rng = rng
        self.delay = delay
        # the virtual clock: a Clock's (core simulation) or the running SimLoop's (driver)
        self.call_later = call_later or (lambda *a: asyncio.get_running_loop().call_later(*a))
        self.drop = 0.0
        self.duplicate = 0.0
        self.handlers: dict[str, Handler] = {}
        self.cut: set[tuple[str, str]] = set()
        self.sent = 0
        # a run sends a few thousand messages; far more is a message storm (a livelock that
        # virtual time cannot end): stop delivering so the run finishes and is reported
        self.limit = limit
        self.flooded = False

    def send(self, src: str, dst: str, msg: Message) -> None:
        if self.sent >= self.limit:
            self.flooded = True
            return
        if (src, dst) in self.cut or self.rng.random() < self.drop:
            return
        frame = encode_frame(msg)  # every message goes through the real codec
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self.call_later(self.rng.uniform(*self.delay), self._deliver, src, dst, frame)
        self.sent += 1

    def _deliver(self, src: str, dst: str, frame: bytes) -> None:
        handler = self.handlers.get(dst)
        if handler is None or (src, dst) in self.cut:
            return
        length, crc = decode_frame_header(frame[:8])
        handler(check_frame(frame[8 : 8 + length], crc))

    def partition(self, group: Sequence[str], everyone: Sequence[str]) -> None:
        for a in group:
            for b in everyone:
                if b not in group:
                    self.cut.add((a, b))
                    self.cut.add((b, a))

    def heal(self) -> None:
        self.cut.clear()


class SimTransport:
    def __init__(self, net: SimNetwork, node_id: str) -> None:
        self.net = net
        self.node_id = node_id

    async def start(self, handler: Handler) -> None:
        self.net.handlers[self.node_id] = handler

    async def stop(self) -> None:
        self.net.handlers.pop(self.node_id, None)

    def update_peers(self, peers: dict[str, str]) -> None:
        pass

    def send(self, to: str, msg: Message) -> None:
        self.net.send(self.node_id, to, msg)


# --- the checked run -------------------------------------------------------------------


class InvariantViolation(AssertionError):
    """A Raft safety property failed."""


class _CheckedMachine(MemoryStateMachine):
    """Reports every apply to the simulation's global record (state-machine safety)."""

    def __init__(self, sim: Simulation, node_id: str, persistent: bool) -> None:
        super().__init__()
        self.sim = sim
        self.node_id = node_id
        self.persistent = persistent  # survives crashes, like a service's own database

    def applied_index(self) -> int:
        return self.index if self.persistent else 0

    def apply(self, entries: Sequence[Entry]) -> list[int]:
        for e in entries:
            seen = self.sim.applied_at.setdefault(e.index, e.data)
            if seen != e.data:
                self.sim.violation(
                    f"state machine safety: {self.node_id} applied {e.data!r} at {e.index}, "
                    f"another node applied {seen!r}"
                )
        return super().apply(entries)

    def restore(self, data: bytes, index: int) -> None:
        super().restore(data, index)
        self.sim.stats.snapshots_installed += 1
        committed = [self.sim.applied_at[i] for i in sorted(self.sim.applied_at) if i <= index]
        if self.base != committed:
            self.sim.violation(f"{self.node_id} restored a snapshot at {index} that differs "
                               "from the commands committed up to it")  # fmt: skip


@dataclass
class SimStats:
    seed: int
    acked: int = 0
    failed: int = 0
    reads: int = 0
    crashes: int = 0
    partitions: int = 0
    elections: int = 0
    torn_writes: int = 0
    snapshots_installed: int = 0
    membership_changes: int = 0
    power_losses: int = 0
    transfers: int = 0
    virtual_seconds: float = 0.0


class Clock:
    """Virtual time without asyncio: callbacks ordered by (due time, scheduling order)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., object], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> None:
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), fn, args))

    def step(self) -> None:
        due, _, fn, args = heapq.heappop(self._queue)
        self.now = due
        fn(*args)


HEARTBEAT = 0.03
ELECTION = (0.15, 0.3)
TIMEOUT = 1.0  # of a client's proposal or read

Done = Callable[[int | None], None]  # an operation's outcome: an index, or None (failed)


class _Node:
    """One boot of a simulated machine: the consensus core with the few driver duties done
    on the virtual clock (persist and send each Ready, group commit, apply, local snapshots,
    ticks). Clients talk to the leader itself; following a leader hint stands in for the
    asyncio driver's forwarding, which the scenario tests cover."""

    def __init__(self, sim: Simulation, node_id: str, sm: _CheckedMachine) -> None:
        self.sim = sim
        self.id = node_id
        self.sm = sm
        self.core = RaftCore(
            node_id,
            election_ticks=election_ticks(ELECTION, HEARTBEAT),
            rng=random.Random(sim.rng.random()),
            snapshot_chunk=64,
        )
        self.mount = sim.disks[node_id].mount()
        self.storage = Storage(self.mount, f"/sim/{node_id}")
        self.alive = True
        self._syncing = False
        self._flush_scheduled = False
        self._broadcast_scheduled = False
        self._proposals: list[tuple[bytes, Done]] = []
        self._waiters: dict[int, tuple[int, Done]] = {}  # index -> (term, done)
        self._apply_waiters: list[tuple[int, int, Callable[[], None]]] = []  # heap

    def boot(self) -> None:
        persist.load(self.storage, self.core, self.sim.initial_members)
        files = self.storage.files_to_sync()  # what a crashed boot left in the page cache
        self.mount.end_sync(self.mount.begin_sync(files))
        self.storage.close_synced(files)
        self.core.start(persist.recover_state_machine(self.storage, self.core, self.sm))
        self.sim.net.handlers[self.id] = self._on_message
        self.sim.clock.call_later(HEARTBEAT, self._tick)

    def halt(self) -> None:
        """This boot does nothing more (crashed, or stopped after a handover)."""
        self.alive = False
        self.sim.net.handlers.pop(self.id, None)

    # the core's inputs

    def _on_message(self, msg: Message) -> None:
        if self.alive:
            self.core.step(msg)
            self._process()

    def _tick(self) -> None:
        if self.alive:
            self.core.tick()
            self._process()
            self.sim.clock.call_later(HEARTBEAT, self._tick)

    def _process(self) -> None:
        persist.drain(self.core, self._handle, self._apply)

    def _handle(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self.storage.save_hard_state(rd.hard_state)
        for w in rd.log_writes:
            persist.write_log(self.storage, w)
            if isinstance(w, Truncate):
                self._fail_waiters([i for i in self._waiters if i >= w.index])
            elif isinstance(w, Install):
                self.sm.restore(w.data, w.meta.index)
                self._fail_waiters([i for i in self._waiters if i <= w.meta.index])
        if any(isinstance(w, Append) for w in rd.log_writes):
            self._sync()
        for to, msg in rd.messages:
            self.sim.net.send(self.id, to, msg)
        for leader, term in rd.leader_changes:
            self.sim.on_leader(self, leader, term)
        for done, index in rd.read_states:
            done(index)
        for done in rd.failed_reads:
            done(None)
        if rd.read_round_due:
            self._schedule_broadcast()
        for peer in rd.snapshots_wanted:
            meta, data = self.storage.read_snapshot()
            if meta is not None:
                self.core.send_snapshot(peer, meta, data)
        leading = self.core.role == LEADER
        if rd.commit_advanced and leading:
            self.core.notify_commit()
        if (rd.stepped_down or (rd.commit_advanced and leading)) and self._proposals:
            self._schedule_flush()

    def _fail_waiters(self, indexes: list[int]) -> None:
        for i in indexes:
            self._waiters.pop(i)[1](None)

    # group commit: one fdatasync at a time covers every append made before it began

    def _sync(self) -> None:
        if self._syncing or (target := self.core.sync_begin()) is None:
            return
        self._syncing = True
        files = self.storage.files_to_sync()
        captured = self.mount.begin_sync(files)
        self.sim.clock.call_later(self.mount.sync_delay(), self._synced, target, files, captured)

    def _synced(self, target: int, files: list[Any], captured: list[Any]) -> None:
        if not self.alive:
            return
        self._syncing = False
        self.mount.end_sync(captured)
        self.storage.close_synced(files)
        more = self.core.synced(target)
        self._process()
        if more:
            self._sync()

    # apply and local snapshots

    def _apply(self) -> None:
        core = self.core
        while entries := core.committed_batch():
            normal = [Entry(e.index, e.term, e.data) for e in entries if e.kind == NORMAL]
            if normal:
                self.sm.apply(normal)
            core.applied_to(entries[-1].index)
            for e in entries:
                w = self._waiters.pop(e.index, None)
                if w is not None:
                    w[1](e.index if w[0] == e.term else None)
        while self._apply_waiters and self._apply_waiters[0][0] <= core.applied_index:
            heapq.heappop(self._apply_waiters)[2]()
        threshold = self.sim.snapshot_threshold
        if core.applied_index - core.snap_index >= threshold:
            self._snapshot()
        core.step_down_if_removed()

    def _snapshot(self) -> None:
        if self.core.local_snapshot_in_progress:
            return
        self.core.local_snapshot_in_progress = True
        meta = self.core.snapshot_meta(self.core.applied_index)
        data = self.sm.snapshot()
        self.sim.clock.call_later(self.mount.sync_delay(), self._snapshot_saved, meta, data)

    def _snapshot_saved(self, meta: SnapshotMeta, data: bytes) -> None:
        if not self.alive:
            return
        self.storage.write_snapshot(meta, data)
        self.storage.compact(meta.index)
        self.core.compact(meta)
        self.core.local_snapshot_in_progress = False

    def wait_applied(self, index: int, then: Callable[[], None]) -> None:
        if self.core.applied_index >= index:
            then()
        else:
            heapq.heappush(self._apply_waiters, (index, next(self.sim.counter), then))

    # what clients and the nemesis ask of the leader

    def propose(self, cmd: bytes, done: Done) -> None:
        self._proposals.append((cmd, done))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.sim.clock.call_later(0.0, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self.alive:
            return
        if self.core.role != LEADER:
            batch, self._proposals = self._proposals, []
            for _, done in batch:
                done(None)
            return
        if self.core.proposals_held():
            return  # flushed again when the oldest batch commits
        batch, self._proposals = self._proposals, []
        indexes = self.core.append_proposals([(NORMAL, cmd) for cmd, _ in batch], [])
        for (_, done), index in zip(batch, indexes, strict=True):
            assert index is not None
            self._waiters[index] = (self.core.term, done)
        self._process()

    def read(self, done: Done) -> None:
        """ReadIndex, then wait until applied up to the index read."""
        core = self.core
        if not self.alive or core.role != LEADER:
            done(None)
        else:
            if core.read_index(lambda index: self._read_confirmed(index, done)):
                self._schedule_broadcast()

    def _schedule_broadcast(self) -> None:
        if not self._broadcast_scheduled:
            self._broadcast_scheduled = True
            self.sim.clock.call_later(0.0, self._broadcast)

    def _read_confirmed(self, index: int | None, done: Done) -> None:
        if index is None:
            done(None)
        else:
            self.wait_applied(index, lambda: done(index))

    def _broadcast(self) -> None:
        self._broadcast_scheduled = False
        if self.alive:
            self.core.broadcast_heartbeat()
            self._process()

    def change_members(self, members: dict[str, str]) -> bool:
        """Propose a configuration if the previous one and this term's no-op committed."""
        core = self.core
        busy = core.config_index > core.commit_index or core.commit_index < core.term_start
        if core.role != LEADER or busy or not members or members == core.members:
            return False
        core.append_proposals([(CONFIG, encode_members(members))], [])
        self._process()
        return True

    def hand_over(self, then: Callable[[], None]) -> None:
        """Transfer leadership to the most up-to-date follower (best effort, bounded)."""
        deadline = self.sim.clock.now + 2 * ELECTION[1]

        def step() -> None:
            if not self.alive:
                return
            if self.core.role != LEADER or self.sim.clock.now >= deadline:
                then()
                return
            target, handed = self.core.transfer_step()
            self._process()
            if target is None:
                then()
            else:
                self.sim.clock.call_later(ELECTION[0] if handed else HEARTBEAT / 5, step)

        step()


class _DriverNode:
    """The asyncio driver (:class:`RaftNode`) on the :class:`SimLoop`, behind the same
    interface as :class:`_Node`, so the simulation also checks the driver's own duties
    (forwarding to the leader, callers' futures, group commit, graceful stop)."""

    def __init__(self, sim: Simulation, node_id: str, sm: _CheckedMachine) -> None:
        self.sim = sim
        self.id = node_id
        self.node = RaftNode(
            RaftConfig(
                node_id=node_id,
                data_dir=Path(f"/sim/{node_id}"),
                listen_host="sim",
                listen_port=0,
                members=dict(sim.initial_members),
                election_timeout=ELECTION,
                heartbeat_interval=HEARTBEAT,
                snapshot_threshold=sim.snapshot_threshold,
                snapshot_chunk=64,
            ),
            sm,
            transport=SimTransport(sim.net, node_id),
            disk=sim.disks[node_id].mount(),
            rng=random.Random(sim.rng.random()),
        )
        self.core = self.node.core
        self.alive = True
        self.node.add_leader_listener(lambda leader, term: sim.on_leader(self, leader, term))
        self._booted: asyncio.Task[None] | None = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.sim.tasks.add(task)
        task.add_done_callback(self.sim.tasks.discard)

    def boot(self) -> None:
        self._booted = asyncio.get_running_loop().create_task(self.node.start())

    def halt(self) -> None:
        self.alive = False

        async def stop() -> None:
            if self._booted is not None:
                with contextlib.suppress(Exception):
                    await self._booted
            await self.node.stop(handover=False)

        self._spawn(stop())

    def propose(self, cmd: bytes, done: Done) -> None:
        async def run() -> None:
            try:
                done(await self.node.propose(cmd, timeout=TIMEOUT))
            except RaftError:
                done(None)

        self._spawn(run())

    def read(self, done: Done) -> None:
        async def run() -> None:
            try:
                await self.node.read_index(timeout=TIMEOUT)
            except RaftError:
                done(None)
                return
            done(self.core.applied_index)  # read_index returns once applied up to its index

        self._spawn(run())

    def change_members(self, members: dict[str, str]) -> bool:
        current = self.core.members
        added = [n for n in members if n not in current]
        removed = [n for n in current if n not in members]
        if added:
            change = self.node.add_member(added[0], members[added[0]], timeout=TIMEOUT)
        elif removed:
            change = self.node.remove_member(removed[0], timeout=TIMEOUT)
        else:
            return False

        async def run() -> None:
            with contextlib.suppress(RaftError):
                await change

        self._spawn(run())
        return True

    def hand_over(self, then: Callable[[], None]) -> None:
        async def run() -> None:
            await self.node.transfer_leadership()
            then()

        self._spawn(run())


SimNode = _Node | _DriverNode


class _LoopClock:
    """The :class:`SimLoop` seen as a :class:`Clock` (for the driver simulation)."""

    def __init__(self, loop: SimLoop) -> None:
        self.loop = loop

    @property
    def now(self) -> float:
        return self.loop.now

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> None:
        self.loop.call_later(delay, fn, *args)


class Simulation:
    """One seeded run; :meth:`run` raises :class:`InvariantViolation` on a safety failure."""

    def __init__(
        self, seed: int, duration: float = 3.0, heal_time: float = 6.0, driver: bool = False
    ) -> None:
        self.seed = seed
        # driver: run the asyncio RaftNode on a SimLoop instead of stepping the core
        self.driver = driver
        self.loop = SimLoop() if driver else None
        self.tasks: set[asyncio.Task[None]] = set()
        self.rng = random.Random(seed)
        self.duration = duration
        self.heal_time = heal_time
        self.size = self.rng.choice([3, 3, 5])
        self.ids = [f"n{i}" for i in range(1, self.size + 1)]
        self.initial_members = {n: f"sim:{n}" for n in self.ids}
        self.clock: Clock | _LoopClock = Clock() if self.loop is None else _LoopClock(self.loop)
        self.counter = itertools.count()
        self.net = SimNetwork(
            random.Random(self.rng.random()), delay=(0.001, 0.02), call_later=self.clock.call_later
        )
        self.disks = {
            n: SimDisk(random.Random(self.rng.random()), (0.0005, 0.02)) for n in self.ids
        }
        self.snapshot_threshold = self.rng.choice([8, 30, 10_000])
        self.nodes: dict[str, SimNode] = {}
        self.sms: dict[str, _CheckedMachine] = {}
        self.down: set[str] = set()
        self.leaders: dict[int, str] = {}  # term -> leader (election safety)
        self.applied_at: dict[int, bytes] = {}  # index -> command (state-machine safety)
        self.acked: dict[bytes, int] = {}  # acknowledged command -> index it was applied at
        self.stats = SimStats(seed)
        self._seq = 0
        self._until = 0.0
        self._clients = 0  # still running
        self._heal_deadline: float | None = None  # set once the clients are done
        self._finished = False
        self.violations: list[str] = []

    def run(self) -> SimStats:
        if self.loop is None:
            self._begin()
            assert isinstance(self.clock, Clock)
            while not self._finished:
                self.clock.step()
        else:
            try:
                self.loop.run_until_complete(self._run_on_loop())
            finally:
                self.loop.run_until_complete(self._stop_all())
                self.loop.close()
        self.stats.torn_writes = sum(d.torn_writes for d in self.disks.values())
        self.stats.virtual_seconds = self.clock.now
        return self.stats

    async def _run_on_loop(self) -> None:
        self._begin()
        while not self._finished:
            self._raise_recorded()
            await asyncio.sleep(0.05)

    async def _stop_all(self) -> None:
        for node in self.nodes.values():
            node.halt()
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def _begin(self) -> None:
        for node_id in self.ids:
            self._start(node_id)
        self._until = self.clock.now + self.duration
        for _ in range(6):
            self._clients += 1
            self._client_next()
        self._nemesis_next()

    # nodes

    def _start(self, node_id: str) -> None:
        old = self.sms.get(node_id)
        # some nodes keep their state machine across crashes (the engine must replay only
        # what comes after its applied index), the others rebuild it from snapshot + log
        sm = (
            old
            if old is not None and old.persistent
            else _CheckedMachine(self, node_id, persistent=self.rng.random() < 0.5)
        )
        node = (_DriverNode if self.driver else _Node)(self, node_id, sm)
        self.nodes[node_id], self.sms[node_id] = node, sm
        self.down.discard(node_id)
        node.boot()

    def _crash(self, node_id: str) -> None:
        node = self.nodes.pop(node_id)
        self.down.add(node_id)
        self.disks[node_id].crash()  # un-synced writes are lost, the last one maybe torn
        node.halt()
        self.stats.crashes += 1

    # invariants

    def violation(self, what: str) -> NoReturn:
        """Record a failed property and raise it (raised inside the driver or an event
        loop callback, it would be swallowed: the run raises the record)."""
        self.violations.append(what)
        raise InvariantViolation(what)

    def _raise_recorded(self) -> None:
        if self.violations:
            raise InvariantViolation(self.violations[0])
        if self.net.flooded:
            raise InvariantViolation(f"message storm: over {self.net.limit} messages sent")

    def on_leader(self, node: SimNode, leader_id: str | None, term: int) -> None:
        if leader_id != node.id:
            return
        self.stats.elections += 1
        other = self.leaders.setdefault(term, node.id)
        if other != node.id:
            self.violation(f"election safety: {other} and {node.id} lead term {term}")
        core = node.core
        for index, data in self.applied_at.items():  # leader completeness
            if index <= core.snap_index:
                continue
            entry = core.log[index - core.snap_index - 1] if index <= core.last_index else None
            if entry is None or entry.kind != NORMAL or entry.data != data:
                self.violation(
                    f"leader completeness: {node.id} leads term {term} without committed "
                    f"entry {index} ({data!r})"
                )

    def check_log_matching(self) -> None:
        cores = [n.core for n in self.nodes.values()]
        for i, a in enumerate(cores):
            for b in cores[i + 1 :]:
                lo = max(a.snap_index, b.snap_index) + 1
                hi = min(a.last_index, b.last_index)
                agree = (k for k in range(hi, lo - 1, -1) if a.term_at(k) == b.term_at(k))
                top = next(agree, None)
                if top is None:
                    continue
                for k in range(lo, top + 1):
                    ea = a.log[k - a.snap_index - 1]
                    eb = b.log[k - b.snap_index - 1]
                    if (ea.term, ea.kind, ea.data) != (eb.term, eb.kind, eb.data):
                        self.violation(
                            f"log matching: {a.id} and {b.id} agree on term at {top} but "
                            f"differ at {k}"
                        )

    # workload: each client proposes, and after an acknowledgement reads (ReadIndex)

    def _leader(self) -> SimNode | None:
        return next((n for n in self.nodes.values() if n.core.role == LEADER), None)

    def _pick_leader(self) -> SimNode | None:
        """A client asks a random live node, and follows its leader hint (the driver
        forwards to the leader itself)."""
        live = [n for n in self.ids if n in self.nodes]
        if not live:
            return None
        node = self.nodes[self.rng.choice(live)]
        if self.driver:
            return node
        hint = self.nodes.get(node.core.leader_id or "")
        for candidate in (node, hint):
            if candidate is not None and candidate.core.role == LEADER:
                return candidate
        return None

    def _once(self, then: Done) -> Done:
        """``then`` called exactly once: with the outcome, or None after TIMEOUT."""
        fired = False

        def finish(result: int | None) -> None:
            nonlocal fired
            if not fired:
                fired = True
                then(result)

        self.clock.call_later(TIMEOUT, finish, None)
        return finish

    def _client_next(self) -> None:
        if self.clock.now >= self._until:
            self._clients -= 1
            return
        self.clock.call_later(self.rng.uniform(0.0, 0.02), self._client_propose)

    def _client_propose(self) -> None:
        node = self._pick_leader()
        if node is None:
            self.stats.failed += 1
            self._client_next()
            return
        self._seq += 1
        cmd = f"{self.seed}:{self._seq}".encode()
        node.propose(cmd, self._once(lambda index: self._client_acked(cmd, index)))

    def _client_acked(self, cmd: bytes, index: int | None) -> None:
        if index is None:
            self.stats.failed += 1
            self._client_next()
            return
        self.acked[cmd] = index
        self.stats.acked += 1
        if self.applied_at.get(index) != cmd:
            self.violation(f"{cmd!r} acknowledged at {index} but not applied there")
        reader = self._pick_leader()
        if reader is None:
            self._client_next()
            return
        reader.read(self._once(lambda read: self._client_read(reader, index, read)))

    def _client_read(self, reader: SimNode, acked: int, read: int | None) -> None:
        if read is not None and reader.alive:
            if read < acked or reader.core.applied_index < acked:
                self.violation(
                    f"linearizability: read_index on {reader.id} returned {read} with applied "
                    f"{reader.core.applied_index} < {acked}, acknowledged earlier"
                )
            self.stats.reads += 1
        self._client_next()

    # faults

    def _nemesis_next(self) -> None:
        self.clock.call_later(self.rng.uniform(0.05, 0.4), self._nemesis)

    def _nemesis(self) -> None:
        if self.clock.now >= self._until:
            self._heal()
            return
        self.check_log_matching()
        self._raise_recorded()
        action = self.rng.random()
        if action < 0.05:  # power loss: every node at once, then all come back
            for node_id in sorted(self.nodes):
                self._crash(node_id)
            self.stats.power_losses += 1
            self.clock.call_later(self.rng.uniform(0.01, 0.3), self._power_back)
            return
        if action < 0.25 and len(self.down) < (self.size - 1) // 2 + 1:
            self._crash(self.rng.choice(sorted(self.nodes)))
        elif action < 0.45 and self.down:
            self._start(self.rng.choice(sorted(self.down)))
        elif action < 0.6:
            group = self.rng.sample(self.ids, self.rng.randint(1, self.size // 2))
            self.net.heal()
            self.net.partition(group, self.ids)
            self.stats.partitions += 1
        elif action < 0.7:
            self.net.heal()
        elif action < 0.8:
            self._change_membership()
        elif action < 0.85 and (leader := self._leader()) is not None:
            self.stats.transfers += 1
            if self.rng.random() < 0.5:  # graceful restart: hand over, stop, come back
                self.nodes.pop(leader.id)
                self.down.add(leader.id)

                def stopped() -> None:
                    leader.halt()
                    self._nemesis_next()

                leader.hand_over(stopped)
                return
            leader.hand_over(lambda: None)
        else:
            self.net.drop = self.rng.choice([0.0, 0.05, 0.2])
            self.net.duplicate = self.rng.choice([0.0, 0.05])
        self._nemesis_next()

    def _power_back(self) -> None:
        for node_id in sorted(self.down):
            self._start(node_id)
        self._nemesis_next()

    def _change_membership(self) -> None:
        """Remove a member (maybe the leader itself) or re-add a removed node; the change
        may well fail amid the other faults."""
        leader = self._leader()
        if leader is None:
            return
        members = leader.core.members
        removed = [n for n in self.ids if n not in members]
        if removed and (len(members) <= 2 or self.rng.random() < 0.5):
            node_id = self.rng.choice(removed)
            new = {**members, node_id: f"sim:{node_id}"}
        else:
            gone = self.rng.choice(sorted(members))
            new = {n: a for n, a in members.items() if n != gone}
        self.stats.membership_changes += 1
        leader.change_members(new)

    # healing: every node back, every fault off; then the cluster must converge

    def _heal(self) -> None:
        self.net.heal()
        self.net.drop = self.net.duplicate = 0.0
        for node_id in sorted(self.down):
            self._start(node_id)
        self._converge()

    def _converge(self) -> None:
        self._raise_recorded()
        if self._clients:  # their last operations may still be under way
            self.clock.call_later(0.05, self._converge)
            return
        if self._heal_deadline is None:
            self._heal_deadline = self.clock.now + self.heal_time
        if self._converged():
            self._final_checks()
            self._finished = True
            return
        leader = self._leader()
        missing = [n for n in self.ids if leader is not None and n not in leader.core.members]
        if leader is not None and missing:  # make every node a member again
            leader.change_members({**leader.core.members, missing[0]: f"sim:{missing[0]}"})
        if self.clock.now > self._heal_deadline:
            states = {n: (x.core.role, x.core.term, x.core.commit_index, x.core.applied_index,
                          x.core.last_index) for n, x in self.nodes.items()}  # fmt: skip
            self.violation(f"no convergence {self.heal_time}s after healing: {states}")
        self.clock.call_later(0.05, self._converge)

    def _converged(self) -> bool:
        leaders = [n for n in self.nodes.values() if n.core.role == LEADER]
        if len(leaders) != 1:
            return False
        target = leaders[0].core.last_index
        return all(
            n.core.applied_index == target and n.core.commit_index == target
            for n in self.nodes.values()
        )

    def _final_checks(self) -> None:
        self.check_log_matching()
        reference = self.sms[self.ids[0]].commands()
        for n, sm in self.sms.items():
            if sm.commands() != reference:
                self.violation(f"{n} applied a different command sequence")
        for cmd, index in self.acked.items():
            if self.applied_at.get(index) != cmd or cmd not in reference:
                self.violation(f"acknowledged {cmd!r} (index {index}) was lost")


def replay_command(seed: int, driver: bool = False) -> str:
    return f"python -m plasmacloud.raft.sim --seed {seed} -v" + (" --driver" if driver else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=None, help="run this one seed")
    p.add_argument("--seeds", type=int, default=100, help="else run seeds 0..N-1")
    p.add_argument("-v", "--verbose", action="store_true", help="log the engine's decisions")
    p.add_argument("--driver", action="store_true", help="run the asyncio driver, not the core")
    args = p.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
    seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
    failures = 0
    for seed in seeds:
        try:
            stats = Simulation(seed, driver=args.driver).run()
        except Exception as exc:  # an invariant, or the engine itself blew up
            failures += 1
            print(f"seed {seed}: FAILED: {exc!r}\n  replay: {replay_command(seed, args.driver)}")
            continue
        if args.seed is not None or args.verbose:
            print(stats)
    print(f"{len(seeds) - failures}/{len(seeds)} seeds passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
