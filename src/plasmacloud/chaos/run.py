"""`plasma lab chaos` / `plasma chaos --spec`: faults against a running cluster while
recorded clients work, then a verdict.

The cluster is a :class:`~plasmacloud.cluster.target.ClusterTarget` with node control: a
lab on this machine, its VMs, or real machines over SSH; nothing here depends on which.

A run: wait for a healthy cluster; start the register, set and watch clients
(:mod:`plasmacloud.chaos.workload`); meanwhile the nemesis injects one fault at a time
(kill -9 a node / the leader / two nodes and restart them, graceful restart, SIGSTOP +
SIGCONT, isolate a node with a partition where the target can partition, cut a VM's power
where the target has VMs, replace a node: remove it from every service and add it back
with empty data, where the target can), waits for the cluster to
be healthy again, pauses, and injects the next. The first faults go through every kind
requested once (in a seeded order), later ones are drawn at random from the same seed.
Everything is bounded: the clients stop at the deadline (or, while the last fault is
being recovered from, a little later, never past a hard bound) or an operation budget,
the nemesis injects nothing after the deadline. At the end every node is started, resumed and
healed whatever happened, final reads are taken, the watch streams catch up, and the
history is saved and checked.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from plasmacloud.chaos.flaredb_workload import (
    FlareClients,
    create_table,
    final_reads,
    flaredb_worker,
)
from plasmacloud.chaos.history import History, Op, Verdict, save_history
from plasmacloud.chaos.history_check import check_history
from plasmacloud.chaos.workload import (
    Budget,
    Clients,
    KeyRotation,
    Recorder,
    Watcher,
    current_revision,
    read_register,
    read_set,
    register_worker,
    set_worker,
)
from plasmacloud.cluster.control import ClusterError, NodeControl
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.cluster.services import flaredb_url
from plasmacloud.cluster.target import ClusterTarget

FAULTS = ("kill", "restart", "pause", "partition", "power", "replace")
# A VM's power cut costs minutes (PXE boot, the agent, services starting under emulation),
# and replace (remove-node, then add-node of the same node with empty data) is a
# membership change, not a failure: asked for by name, never part of the default set.
OPT_IN = ("power", "replace")
NO_POWER = "power faults need VMs (`plasma lab up --backend qemu`)"
NO_REPLACE = "replace faults need a target that can add and remove nodes (a lab)"
NO_CONTROL = "chaos needs control of the nodes (a lab, its VMs, or machines over SSH)"
WRITE_KINDS = ("write", "cas", "add")


@dataclass
class ChaosConfig:
    """What a run does; every bound is here."""

    duration_s: float = 60.0
    faults: tuple[str, ...] = ("kill", "restart", "pause")
    seed: int = 0
    register_workers: int = 4
    set_workers: int = 2
    flaredb_workers: int = 2  # when the cluster runs FlareDB
    watchers: int = 2
    max_ops: int = 50_000
    gap_s: tuple[float, float] = (1.0, 2.5)  # quiet time before each fault
    hold_s: tuple[float, float] = (2.0, 4.0)  # how long a fault lasts
    recover_timeout_s: float = 60.0
    # the last fault heals at least this long before the clients stop, so its recovery
    # (the next acknowledged write) is measured
    settle_s: float = 4.0


@dataclass
class Fault:
    """One injected fault; times are seconds since the run started."""

    kind: str
    targets: list[str]
    start: float
    healed: float | None = None
    ready: float | None = None  # cluster healthy with an agreed leader again
    # service -> its first acknowledged write invoked after ``start`` (None: none seen)
    next_ack: dict[str, float | None] = field(default_factory=dict)
    note: str = ""

    @property
    def recovery_s(self) -> dict[str, float | None]:
        """Per service: time from the fault to its next acknowledged write."""
        return {s: None if t is None else t - self.start for s, t in self.next_ack.items()}


@dataclass
class ChaosResult:
    """The run's history, verdicts, faults, where the history was saved, and problems
    with the run itself (e.g. the cluster never recovered)."""

    history: History
    verdicts: list[Verdict]
    faults: list[Fault]
    history_path: Path
    problems: list[str] = field(default_factory=list)


def default_faults(target: ClusterTarget) -> str:
    """Every fault the target can inject (partitions only with a partitioner), except the
    opt-in ones."""
    return ",".join(
        f
        for f in FAULTS
        if f not in OPT_IN and (f != "partition" or target.partitioner is not None)
    )


def parse_faults(text: str, target: ClusterTarget) -> tuple[str, ...]:
    """``kill,restart,pause,partition`` -> a checked tuple (partition needs a partitioner)."""
    faults = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        raise ClusterError(f"unknown faults {unknown or text!r}; choose from {', '.join(FAULTS)}")
    if "partition" in faults and target.partitioner is None:
        raise ClusterError(target.no_partition or "this target cannot inject partition faults")
    if "power" in faults and target.power is None:
        raise ClusterError(NO_POWER)
    if "replace" in faults and target.replace_node is None:
        raise ClusterError(NO_REPLACE)
    return faults


def node_control(target: ClusterTarget) -> NodeControl:
    """The target's node control; ClusterError if it has none."""
    if target.control is None:
        raise ClusterError(NO_CONTROL)
    return target.control


class Nemesis:
    """Injects one fault at a time until the deadline and always undoes them."""

    def __init__(
        self,
        target: ClusterTarget,
        control: NodeControl,
        cfg: ChaosConfig,
        rec: Recorder,
        say: Callable[[str], None],
    ) -> None:
        self.target = target
        self.control = control
        self.cfg = cfg
        self.rec = rec
        self.say = say
        self.rng = random.Random(cfg.seed)
        self.faults: list[Fault] = []
        self.problems: list[str] = []
        self._order = list(cfg.faults)
        self.rng.shuffle(self._order)

    async def run(self, deadline: float, budget: Budget) -> None:
        """Fault, recover, repeat, while a whole cycle still fits before ``deadline``.

        The clients keep working through each recovery and ``settle_s`` after it (within
        ``budget``'s hard bound), so every fault's next acknowledged write is seen."""
        planned = budget.deadline
        while True:
            gap = self.rng.uniform(*self.cfg.gap_s)
            hold = self.rng.uniform(*self.cfg.hold_s)
            if time.monotonic() + gap + hold > deadline:
                return
            await asyncio.sleep(gap)
            kind = self._order.pop(0) if self._order else self.rng.choice(self.cfg.faults)
            budget.deadline = budget.hard_deadline  # clients work on through the fault
            try:
                recovered = await self._cycle(kind, hold)
            finally:
                budget.deadline = max(planned, time.monotonic() + self.cfg.settle_s)
            if not recovered:
                return

    async def _cycle(self, kind: str, hold: float) -> bool:
        """Inject one fault, undo it, wait for a healthy cluster; False if that failed."""
        try:
            fault = await self._inject(kind, hold)
        except ClusterError as exc:
            self.problems.append(f"could not inject {kind}: {exc}")
            self.say(f"[red]could not inject {kind}: {exc}[/red]")
            return False
        self.faults.append(fault)
        try:
            await self.target.wait_ready(self.cfg.recover_timeout_s)
        except ClusterError as exc:
            self.problems.append(f"cluster did not recover after {fault.kind}: {exc}")
            self.say(f"[red]not recovered after {fault.kind}: {exc}[/red]")
            return False
        fault.ready = self.rec.now()
        self.say(f"  healthy again at {fault.ready:.1f}s")
        return True

    async def _targets(self, kind: str) -> tuple[list[str], str]:
        """Whom to hit: the Chainfire leader half the time, else a random node (a quarter
        of kills take two nodes); the note says whether the leader was among them."""
        nodes = self.target.node_ids
        leader = (await self.target.probe()).leader_node
        if kind == "kill" and self.rng.random() < 0.25:
            targets = self.rng.sample(nodes, 2)
            return targets, "two nodes, leader among them" if leader in targets else "two nodes"
        if leader is not None and self.rng.random() < 0.5:
            return [leader], "chainfire leader"
        target = self.rng.choice(nodes)
        return [target], "chainfire leader" if target == leader else "follower"

    async def _inject(self, kind: str, hold: float) -> Fault:
        backend = self.control
        nodes = self.target.node_ids
        targets, role = await self._targets(kind)
        first = targets[0]
        # ``start`` is taken once the fault is in effect (the process is dead, stopped,
        # cut off), so the recovery time never counts writes the old leader finished first
        fault = Fault(kind=kind, targets=targets, start=0.0, note=role)
        if kind == "kill":
            for t in targets:
                await asyncio.to_thread(backend.kill_node, t, signal.SIGKILL)
            fault.start = self._announce(fault, hold)
            await asyncio.sleep(hold)
            for t in targets:
                await asyncio.to_thread(backend.start_node, t)
        elif kind == "restart":
            await asyncio.to_thread(backend.stop_node, first)
            fault.start = self._announce(fault, 0.0)
            await asyncio.to_thread(backend.start_node, first)
        elif kind == "pause":
            await asyncio.to_thread(backend.kill_node, first, signal.SIGSTOP)
            fault.start = self._announce(fault, hold)
            await asyncio.sleep(hold)
            await asyncio.to_thread(backend.kill_node, first, signal.SIGCONT)
        elif kind == "replace":
            replace = self.target.replace_node
            if replace is None:  # parse_faults refuses this; a ClusterError stops the run cleanly
                raise ClusterError(NO_REPLACE)
            fault.start = self._announce(fault, 0.0)
            await replace(first, lambda step: self.say(f"  {step}"))
        elif kind == "power":
            power = self.target.power
            if power is None:  # parse_faults refuses this; a ClusterError stops the run cleanly
                raise ClusterError(NO_POWER)
            await asyncio.to_thread(power.cut_power, first)
            fault.start = self._announce(fault, hold)
            await asyncio.sleep(hold)
            await asyncio.to_thread(power.restore_power, first)
        else:
            cut = self.target.partitioner
            if cut is None:  # parse_faults refuses this; a ClusterError stops the run cleanly
                raise ClusterError(self.target.no_partition)
            others = [n for n in nodes if n != first]
            await asyncio.to_thread(cut.partition, [first], others)
            fault.start = self._announce(fault, hold)
            await asyncio.sleep(hold)
            await asyncio.to_thread(cut.heal)
        fault.healed = self.rec.now()
        return fault

    def _announce(self, fault: Fault, hold: float) -> float:
        now = self.rec.now()
        held = f", hold {hold:.1f}s" if hold else ""
        self.say(f"[{now:5.1f}s] {fault.kind} {', '.join(fault.targets)} ({fault.note}){held}")
        return now

    async def restore_all(self) -> None:
        """Resume, heal and start every node, whatever state the run left it in (a step
        that fails is recorded as a problem and the others still run)."""
        backend = self.control
        nodes = self.target.node_ids
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.target.power is not None:
            steps += [(f"power on {n}", partial(self.target.power.restore_power, n)) for n in nodes]
        steps += [(f"resume {n}", partial(backend.kill_node, n, signal.SIGCONT)) for n in nodes]
        if self.target.partitioner is not None:
            steps.append(("heal", self.target.partitioner.heal))
        steps += [(f"start {n}", partial(backend.start_node, n)) for n in nodes]
        for what, step in steps:
            try:
                await asyncio.to_thread(step)
            except ClusterError as exc:
                self.problems.append(f"could not {what}: {exc}")


async def _final_reads(
    proc: int,
    clients: Clients,
    flare: FlareClients | None,
    rec: Recorder,
    prefix: str,
    keys: KeyRotation,
) -> None:
    """Read every set through every node and each live register once, after recovery."""
    if flare is not None:
        await final_reads(proc, flare, rec)
    for i, node in enumerate(clients.nodes):
        await read_set(proc, clients, rec, prefix, node)
        for key in keys.live_keys()[i :: len(clients.nodes)]:
            await read_register(proc, clients, rec, key, node)


def _flare_clients(target: ClusterTarget, table: str) -> FlareClients | None:
    """FlareDB clients when the cluster runs FlareDB, else ``None``."""
    if not target.runs("flaredb"):
        return None
    return FlareClients({c.node_id: flaredb_url(c) for c in target.configs}, target.ssl_ctx, table)


def service_of(op: Op) -> str:
    """Which service an operation went to (FlareDB's set keys are ``flaredb:<table>``)."""
    return "flaredb" if op.key.startswith("flaredb:") else "chainfire"


def next_acks(faults: list[Fault], ops: list[Op]) -> None:
    """Fill in each fault's first acknowledged write per service invoked after it started."""
    acked: dict[str, list[tuple[float, float]]] = {}
    for op in ops:
        applied = op.kind != "cas" or op.succeeded
        if op.kind in WRITE_KINDS and op.outcome == "ok" and op.complete is not None and applied:
            acked.setdefault(service_of(op), []).append((op.invoke, op.complete))
    for fault in faults:
        for service, times in sorted(acked.items()):
            after = [c for i, c in times if i >= fault.start]
            fault.next_ack[service] = min(after) if after else None


async def run_chaos(
    target: ClusterTarget, cfg: ChaosConfig, history_path: Path, say: Callable[[str], None] = print
) -> ChaosResult:
    """One bounded chaos run against a running cluster (see the module docs)."""
    control = node_control(target)
    await target.wait_ready(cfg.recover_timeout_s)
    rng = random.Random(cfg.seed)
    stamp = int(time.time())
    prefix = f"/chaos/{cfg.seed}-{stamp}"
    flare = _flare_clients(target, f"chaos_{cfg.seed}_{stamp}")
    clients = Clients({c.node_id: dial(client_target(c), target.tls) for c in target.configs})
    rec = Recorder()
    nemesis = Nemesis(target, control, cfg, rec, say)
    watch_tasks: list[asyncio.Task[None]] = []
    problems: list[str] = []
    try:
        start_rev = await current_revision(clients) + 1
        if flare is not None:
            await create_table(flare)
        watchers = [Watcher(i + 1, clients, rec, start_rev) for i in range(cfg.watchers)]
        watch_tasks = [asyncio.create_task(w.run()) for w in watchers]
        deadline = time.monotonic() + cfg.duration_s
        hard = deadline + cfg.recover_timeout_s + cfg.settle_s
        budget = Budget(deadline=deadline, max_ops=cfg.max_ops, hard_deadline=hard)
        keys = KeyRotation(prefix)
        seeds = [rng.random() for _ in range(cfg.register_workers + cfg.set_workers)]
        workers = [
            register_worker(p, clients, rec, keys, budget, random.Random(seeds[p]))
            for p in range(cfg.register_workers)
        ] + [
            set_worker(p, clients, rec, prefix, budget, random.Random(seeds[p]))
            for p in range(cfg.register_workers, len(seeds))
        ]
        if flare is not None:
            workers += [
                flaredb_worker(len(seeds) + i, flare, rec, budget, random.Random(rng.random()))
                for i in range(cfg.flaredb_workers)
            ]
        try:
            await asyncio.gather(*workers, nemesis.run(deadline - cfg.settle_s, budget))
        finally:
            await nemesis.restore_all()
        say(f"[{rec.now():5.1f}s] workload done ({len(rec.ops)} ops); every node restored")
        try:
            await target.wait_ready(cfg.recover_timeout_s)
            final = len(seeds) + cfg.flaredb_workers
            await _final_reads(final, clients, flare, rec, prefix, keys)
            revision = await current_revision(clients)
        except (ClusterError, ConnectionError) as exc:
            # the history so far is still saved and checked; what is unverified says so
            problems.append(f"no final reads: {exc}")
        else:
            for w in watchers:
                if not await w.catch_up(revision, timeout=30):
                    last = w.next_rev - 1
                    problems.append(f"watch {w.wid} stopped at revision {last} < {revision}")
    finally:
        for t in watch_tasks:
            t.cancel()
        await asyncio.gather(*watch_tasks, return_exceptions=True)
        await clients.close()
    next_acks(nemesis.faults, rec.ops)
    history = History(
        meta={
            "seed": cfg.seed,
            "faults": list(cfg.faults),
            "duration_s": cfg.duration_s,
            "backend": target.name,
            "prefix": prefix,
            "injected": [f"{f.kind} {','.join(f.targets)} @{f.start:.2f}" for f in nemesis.faults],
        },
        ops=rec.ops,
        events=rec.events,
        spans=rec.spans,
    )
    save_history(history_path, history)
    verdicts = await asyncio.to_thread(check_history, history)
    return ChaosResult(history, verdicts, nemesis.faults, history_path, nemesis.problems + problems)
