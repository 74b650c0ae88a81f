"""Deterministic, seeded simulation of a Raft cluster: the real :class:`RaftNode` code on a
virtual clock, an in-memory network (drops, delays, reordering, duplicates, partitions) and
simulated disks that forget un-synced writes and tear the last one when a node crashes.

One seed = one reproducible run. The run checks election safety (at most one leader per
term), log matching, leader completeness, state-machine safety (no two nodes apply different
commands at an index), linearizable ReadIndex, and that every acknowledged proposal is applied
everywhere once the faults heal. Replay a seed with::

    python -m plasmacloud.raft.sim --seed 1234 [-v]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import random
import selectors
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plasmacloud.raft.api import Entry, RaftError
from plasmacloud.raft.codec import NORMAL, Message, check_frame, decode_frame_header, encode_frame
from plasmacloud.raft.memory import MemoryStateMachine
from plasmacloud.raft.node import RaftConfig, RaftNode
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
        self.check()
        captured = [(f.state, bytes(f.state.data), f.state.version) for f in files]
        await asyncio.sleep(self.disk.rng.uniform(*self.disk.sync_delay))
        self.check()
        for st, data, version in captured:
            st.make_durable(data, version)  # what was written when the sync began

    def write_atomic(self, path: str, data: bytes) -> None:
        self.check()[path] = _FileState(bytearray(data), bytes(data))

    async def write_atomic_async(self, path: str, data: bytes) -> None:
        self.check()
        await asyncio.sleep(self.disk.rng.uniform(*self.disk.sync_delay))
        self.write_atomic(path, data)


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
        self, rng: random.Random, delay: tuple[float, float], limit: int = 100_000
    ) -> None:
        self.rng = rng
        self.delay = delay
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
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            loop.call_later(self.rng.uniform(*self.delay), self._deliver, src, dst, frame)
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


class Simulation:
    """One seeded run; :meth:`run` raises :class:`InvariantViolation` on a safety failure."""

    def __init__(self, seed: int, duration: float = 3.0, heal_time: float = 6.0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.duration = duration
        self.heal_time = heal_time
        self.size = self.rng.choice([3, 3, 5])
        self.ids = [f"n{i}" for i in range(1, self.size + 1)]
        self.net = SimNetwork(random.Random(self.rng.random()), delay=(0.001, 0.02))
        self.disks = {
            n: SimDisk(random.Random(self.rng.random()), (0.0005, 0.02)) for n in self.ids
        }
        self.snapshot_threshold = self.rng.choice([8, 30, 10_000])
        self.nodes: dict[str, RaftNode] = {}
        self.sms: dict[str, _CheckedMachine] = {}
        self.down: set[str] = set()
        self.leaders: dict[int, str] = {}  # term -> leader (election safety)
        self.applied_at: dict[int, bytes] = {}  # index -> command (state-machine safety)
        self.acked: dict[bytes, int] = {}  # acknowledged command -> index it was applied at
        self.stats = SimStats(seed)
        self._seq = 0
        self.violations: list[str] = []

    def run(self) -> SimStats:
        loop = SimLoop()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(self._stop_all())
            loop.run_until_complete(_cancel_leftovers())
            loop.close()
        return self.stats

    # nodes

    def _config(self, node_id: str) -> RaftConfig:
        return RaftConfig(
            node_id=node_id,
            data_dir=Path(f"/sim/{node_id}"),
            listen_host="sim",
            listen_port=0,
            members={n: f"sim:{i}" for i, n in enumerate(self.ids)},
            election_timeout=(0.15, 0.3),
            heartbeat_interval=0.03,
            snapshot_threshold=self.snapshot_threshold,
            snapshot_chunk=64,
        )

    async def _start(self, node_id: str) -> None:
        old = self.sms.get(node_id)
        # some nodes keep their state machine across crashes (the engine must replay only
        # what comes after its applied index), the others rebuild it from snapshot + log
        sm = (
            old
            if old is not None and old.persistent
            else _CheckedMachine(self, node_id, persistent=self.rng.random() < 0.5)
        )
        node = RaftNode(
            self._config(node_id),
            sm,
            transport=SimTransport(self.net, node_id),
            disk=self.disks[node_id].mount(),
            rng=random.Random(self.rng.random()),
        )
        node.add_leader_listener(functools.partial(self._on_leader, node))
        self.nodes[node_id], self.sms[node_id] = node, sm
        self.down.discard(node_id)
        await node.start()

    async def _crash(self, node_id: str) -> None:
        node = self.nodes.pop(node_id)
        self.down.add(node_id)
        self.disks[node_id].crash()  # first: the stop below must not complete in-flight I/O
        await node.stop(handover=False)
        self.stats.crashes += 1

    async def _stop_all(self) -> None:
        for node_id in list(self.nodes):
            await self.nodes.pop(node_id).stop()

    # invariants

    def violation(self, what: str) -> None:
        """Record a failed property (raised from inside the engine, it would be swallowed)."""
        self.violations.append(what)
        raise InvariantViolation(what)

    def _raise_recorded(self) -> None:
        if self.violations:
            raise InvariantViolation(self.violations[0])
        if self.net.flooded:
            raise InvariantViolation(f"message storm: over {self.net.limit} messages sent")

    def _on_leader(self, node: RaftNode, leader_id: str | None, term: int) -> None:
        if leader_id != node.id:
            return
        self.stats.elections += 1
        other = self.leaders.setdefault(term, node.id)
        if other != node.id:
            self.violation(f"election safety: {other} and {node.id} lead term {term}")
        for index, data in self.applied_at.items():  # leader completeness
            if index <= node.core.snap_index:
                continue
            entry = (
                node.core.log[index - node.core.snap_index - 1]
                if index <= node.last_index
                else None
            )
            if entry is None or entry.kind != NORMAL or entry.data != data:
                self.violation(
                    f"leader completeness: {node.id} leads term {term} without committed "
                    f"entry {index} ({data!r})"
                )

    def check_log_matching(self) -> None:
        nodes = list(self.nodes.values())
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                ca, cb = a.core, b.core
                lo = max(ca.snap_index, cb.snap_index) + 1
                hi = min(ca.last_index, cb.last_index)
                agree = (k for k in range(hi, lo - 1, -1) if ca.term_at(k) == cb.term_at(k))
                top = next(agree, None)
                if top is None:
                    continue
                for k in range(lo, top + 1):
                    ea = ca.log[k - ca.snap_index - 1]
                    eb = cb.log[k - cb.snap_index - 1]
                    if (ea.term, ea.kind, ea.data) != (eb.term, eb.kind, eb.data):
                        raise InvariantViolation(
                            f"log matching: {a.id} and {b.id} agree on term at {top} but "
                            f"differ at {k}"
                        )

    # workload and faults

    async def _client(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            await asyncio.sleep(self.rng.uniform(0.0, 0.02))
            live = [n for n in self.ids if n in self.nodes]
            if not live:
                continue
            node = self.nodes[self.rng.choice(live)]
            self._seq += 1
            cmd = f"{self.seed}:{self._seq}".encode()
            try:
                index = await node.propose(cmd, timeout=1.0)
            except RaftError:
                self.stats.failed += 1
                continue
            self.acked[cmd] = index
            self.stats.acked += 1
            if self.applied_at.get(index) != cmd:
                raise InvariantViolation(f"{cmd!r} acknowledged at {index} but not applied there")
            live = [n for n in self.ids if n in self.nodes]
            reader = self.nodes[self.rng.choice(live)]
            try:
                await reader.read_index(timeout=1.0)
            except RaftError:
                continue
            if reader.id in self.nodes and reader.applied_index < index:
                raise InvariantViolation(
                    f"linearizability: read_index on {reader.id} returned with applied "
                    f"{reader.applied_index} < {index}, acknowledged earlier"
                )
            self.stats.reads += 1

    async def _nemesis(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            await asyncio.sleep(self.rng.uniform(0.05, 0.4))
            self.check_log_matching()
            self._raise_recorded()
            action = self.rng.random()
            if action < 0.05:  # power loss: every node at once, then all come back
                for node_id in sorted(self.nodes):
                    await self._crash(node_id)
                await asyncio.sleep(self.rng.uniform(0.01, 0.3))
                for node_id in sorted(self.down):
                    await self._start(node_id)
                self.stats.power_losses += 1
            elif action < 0.25 and len(self.down) < (self.size - 1) // 2 + 1:
                await self._crash(self.rng.choice(sorted(self.nodes)))
            elif action < 0.45 and self.down:
                await self._start(self.rng.choice(sorted(self.down)))
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
                if self.rng.random() < 0.5:  # graceful restart: hand over, stop, come back
                    self.nodes.pop(leader.id)
                    self.down.add(leader.id)
                    await leader.stop()
                else:
                    task = asyncio.get_running_loop().create_task(leader.transfer_leadership())
                    task.add_done_callback(lambda t: t.cancelled() or t.exception())
                self.stats.transfers += 1
            else:
                self.net.drop = self.rng.choice([0.0, 0.05, 0.2])
                self.net.duplicate = self.rng.choice([0.0, 0.05])

    def _leader(self) -> RaftNode | None:
        return next((n for n in self.nodes.values() if n.is_leader), None)

    def _change_membership(self) -> None:
        """Remove a member (maybe the leader itself) or re-add a removed node, in the
        background: the change may well fail amid the other faults."""
        leader = self._leader()
        if leader is None:
            return
        removed = [n for n in self.ids if n not in leader.members]
        via = self.nodes[self.rng.choice(sorted(self.nodes))]  # followers forward it
        if removed and (len(leader.members) <= 2 or self.rng.random() < 0.5):
            node_id = self.rng.choice(removed)
            change = via.add_member(node_id, f"sim:{node_id}", timeout=1.0)
        else:
            change = via.remove_member(self.rng.choice(sorted(leader.members)), timeout=1.0)
        self.stats.membership_changes += 1
        task = asyncio.get_running_loop().create_task(change)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _rejoin(self) -> None:
        """After healing, make every node a member again (so all of them must converge).
        Called until convergence: a change requested before the heal may still land."""
        leader = self._leader()
        missing = [n for n in self.ids if leader is not None and n not in leader.members]
        if leader is not None and missing:
            with contextlib.suppress(RaftError):
                await leader.add_member(missing[0], f"sim:{missing[0]}", timeout=1.0)

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        for node_id in self.ids:
            await self._start(node_id)
        until = loop.time() + self.duration
        clients = [loop.create_task(self._client(until)) for _ in range(6)]
        await self._nemesis(until)
        # heal everything and check that the cluster converges with every acked write
        self.net.heal()
        self.net.drop = self.net.duplicate = 0.0
        for node_id in sorted(self.down):
            await self._start(node_id)
        for c in clients:
            await c
        deadline = loop.time() + self.heal_time
        while not self._converged():
            self._raise_recorded()
            await self._rejoin()
            if loop.time() > deadline:
                states = {n: (x.role, x.term, x.commit_index, x.applied_index, x.last_index)
                          for n, x in self.nodes.items()}  # fmt: skip
                raise InvariantViolation(
                    f"no convergence {self.heal_time}s after healing: {states}"
                )
            await asyncio.sleep(0.05)
        self.check_log_matching()
        self._raise_recorded()
        reference = self.sms[self.ids[0]].commands()
        for n, sm in self.sms.items():
            if sm.commands() != reference:
                raise InvariantViolation(f"{n} applied a different command sequence")
        for cmd, index in self.acked.items():
            if self.applied_at.get(index) != cmd or cmd not in reference:
                raise InvariantViolation(f"acknowledged {cmd!r} (index {index}) was lost")
        self.stats.torn_writes = sum(d.torn_writes for d in self.disks.values())
        self.stats.virtual_seconds = loop.time()

    def _converged(self) -> bool:
        leaders = [n for n in self.nodes.values() if n.is_leader]
        if len(leaders) != 1:
            return False
        target = leaders[0].last_index
        return all(
            n.applied_index == target and n.commit_index == target for n in self.nodes.values()
        )


async def _cancel_leftovers() -> None:
    """Cancel the clients and membership changes a failed run left behind."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def replay_command(seed: int) -> str:
    return f"python -m plasmacloud.raft.sim --seed {seed} -v"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=None, help="run this one seed")
    p.add_argument("--seeds", type=int, default=100, help="else run seeds 0..N-1")
    p.add_argument("-v", "--verbose", action="store_true", help="log the engine's decisions")
    args = p.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
    seeds = [args.seed] if args.seed is not None else list(range(args.seeds))
    failures = 0
    for seed in seeds:
        try:
            stats = Simulation(seed).run()
        except Exception as exc:  # an invariant, or the engine itself blew up
            failures += 1
            print(f"seed {seed}: FAILED: {exc!r}\n  replay: {replay_command(seed)}")
            continue
        if args.seed is not None or args.verbose:
            print(stats)
    print(f"{len(seeds) - failures}/{len(seeds)} seeds passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
