"""The chaos run's clients, for a test that runs one day-2 operation while they write:
registers (read / write / cas), a Chainfire set and a FlareDB table, on every node of a
Chainfire + FlareDB lab, bounded in time and count; then final reads through one node
and every history property checked."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp

from plasmacloud.chaos.flaredb_workload import (
    FlareClients,
    create_table,
    flaredb_read,
    flaredb_worker,
)
from plasmacloud.chaos.history import History, Op
from plasmacloud.chaos.history_check import check_history
from plasmacloud.chaos.workload import (
    Budget,
    Clients,
    KeyRotation,
    Recorder,
    read_register,
    read_set,
    register_worker,
    set_worker,
)
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.cluster.services import flaredb_url
from plasmacloud.lab.control import Lab
from plasmacloud.lab.target import lab_target

FINAL_READER = 9  # the process id the final reads are recorded under


async def until_ok(read: Callable[[], Awaitable[bool]]) -> None:
    """Repeat a recorded read until it succeeds (the cluster may still be settling)."""
    async with asyncio.timeout(30):
        while not await read():
            await asyncio.sleep(0.2)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest time between two of the sorted ``times`` around ``[start, end]``: the
    last one before it, those within, the first one after."""
    edge = [t for t in times if t <= start][-1:]
    edge += [t for t in times if start < t <= end]
    edge += [t for t in times if t > end][:1]
    return max((b - a for a, b in itertools.pairwise(edge)), default=end - start)


@dataclass
class ChaosClients:
    """Clients of one lab recording one history (:meth:`open`, then :meth:`workers`)."""

    rec: Recorder
    clients: Clients
    flare: FlareClients
    keys: KeyRotation
    prefix: str
    budget: Budget | None = None

    @classmethod
    async def open(cls, lab: Lab, name: str) -> ChaosClients:
        """Dial every node and create the FlareDB table ``name`` the set lives in."""
        target = lab_target(lab)
        urls = {c.node_id: flaredb_url(c) for c in lab.configs()}
        flare = FlareClients(urls, target.ssl_ctx, name)
        await create_table(flare)
        clients = Clients({c.node_id: dial(client_target(c), target.tls) for c in lab.configs()})
        prefix = f"/chaos/{name}"
        return cls(Recorder(), clients, flare, KeyRotation(prefix), prefix)

    def workers(self, seconds: float, max_ops: int = 50_000) -> list[Coroutine[Any, Any, None]]:
        """Three register clients, a set adder and a FlareDB inserter, all stopping after
        ``seconds`` or ``max_ops`` operations between them."""
        deadline = time.monotonic() + seconds
        budget = self.budget = Budget(deadline=deadline, max_ops=max_ops, hard_deadline=deadline)
        rec, clients, keys = self.rec, self.clients, self.keys
        return [
            *(register_worker(p, clients, rec, keys, budget, random.Random(p)) for p in range(3)),
            set_worker(3, clients, rec, self.prefix, budget, random.Random(3)),
            flaredb_worker(4, self.flare, rec, budget, random.Random(4)),
        ]

    def stop(self) -> None:
        """The workers finish the operation they are in and stop."""
        assert self.budget is not None
        self.budget.deadline = time.monotonic()

    def longest_gap(self, start: float, end: float, flaredb: bool) -> float:
        """The longest time without a completed operation on Chainfire (or FlareDB) around
        ``[start, end]`` (recorder times): the operation's unavailability window."""
        done = sorted(
            op.complete
            for op in self.rec.ops
            if op.outcome == "ok"
            and op.complete is not None
            and (op.key == self.flare.set_key) == flaredb
        )
        return longest_gap(done, start, end)

    async def final_reads(self, node: str) -> None:
        """The set, every live register and the table, read through ``node``."""
        rec, clients = self.rec, self.clients
        await until_ok(lambda: read_set(FINAL_READER, clients, rec, self.prefix, node))
        for key in self.keys.live_keys():
            await until_ok(partial(read_register, FINAL_READER, clients, rec, key, node))
        async with aiohttp.ClientSession() as session:
            await until_ok(lambda: flaredb_read(FINAL_READER, self.flare, rec, session, node))

    async def close(self) -> None:
        await self.clients.close()

    def acknowledged(self) -> list[Op]:
        return [op for op in self.rec.ops if op.kind in ("write", "add") and op.outcome == "ok"]

    def check(self, scenario: str, max_states: int = 200_000) -> None:
        """Every property of the history holds, and both final set reads are in it."""
        history = History(meta={"scenario": scenario}, ops=self.rec.ops, events=[], spans=[])
        verdicts = check_history(history, max_states=max_states)
        failed = [(v.property, v.details[:5]) for v in verdicts if v.status != "ok"]
        assert not failed, failed
        finals = [op for op in self.rec.ops if op.process == FINAL_READER and op.kind == "read_set"]
        assert len(finals) == 2  # Chainfire's set and FlareDB's table
