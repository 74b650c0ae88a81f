"""The clients of a chaos run: register, set and watch workloads that record a history.

Every operation goes to one node, once, with no client-side retry (a retried write could
be applied twice, which would look like a consistency bug the cluster never had). A
failed read is dropped by the checkers; a failed write is recorded as ``unknown``: the
request may have reached the leader before the error. After an error the worker moves
to another node.

Store layout under the run's prefix ``P``:

* ``P/reg/<slot>-<generation>``: registers; a key is retired after a few dozen
  operations and replaced by a fresh one, so each key's linearizability search stays small;
* ``P/set/<element>``: the set; an add of element ``e`` puts ``P/set/e = e``.

Watch streams cover the whole keyspace (nothing else writes during a run), so every
revision must arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

import grpc

from plasmacloud.chainfire.client import prefix_end
from plasmacloud.chainfire.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from plasmacloud.chaos.history import Op, OpKind, Outcome, WatchEvent, WatchSpan

OP_TIMEOUT_S = 1.0  # short: a request stuck on a dead or paused node delays the next ack
WATCH_IDLE_S = 5.0  # a stream silent this long (paused or cut-off node) is reopened elsewhere
READS_PER_SET_READ = 25
REGISTER_OPS: list[OpKind] = ["read", "write", "cas"]


class Recorder:
    """The history being recorded; times are seconds since the run started."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.ops: list[Op] = []
        self.events: list[WatchEvent] = []
        self.spans: list[WatchSpan] = []

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 6)


@dataclass
class Clients:
    """One channel per node, as the operator dials them."""

    channels: dict[str, grpc.aio.Channel]

    @property
    def nodes(self) -> list[str]:
        return sorted(self.channels)

    def kv(self, node: str) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channels[node])

    async def close(self) -> None:
        for ch in self.channels.values():
            await ch.close()


@dataclass
class KeyRotation:
    """``slots`` live register keys; each is replaced after ``ops_per_key`` operations."""

    prefix: str
    slots: int = 4
    ops_per_key: int = 40
    generation: list[int] = field(default_factory=list)
    used: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.generation = [0] * self.slots
        self.used = [0] * self.slots

    def pick(self, rng: random.Random) -> str:
        slot = rng.randrange(self.slots)
        key = f"{self.prefix}/reg/{slot}-{self.generation[slot]}"
        self.used[slot] += 1
        if self.used[slot] >= self.ops_per_key:
            self.generation[slot] += 1
            self.used[slot] = 0
        return key

    def live_keys(self) -> list[str]:
        return [f"{self.prefix}/reg/{s}-{g}" for s, g in enumerate(self.generation)]


@dataclass
class Budget:
    """Shared bounds: stop at ``deadline`` (monotonic) or after ``max_ops`` operations.

    The nemesis may move ``deadline`` later while a fault is being recovered from (so
    the recovery is observed by clients), but never past ``hard_deadline``.
    """

    deadline: float
    max_ops: int
    hard_deadline: float
    issued: int = 0

    def take(self) -> bool:
        now = time.monotonic()
        if self.issued >= self.max_ops or now >= min(self.deadline, self.hard_deadline):
            return False
        self.issued += 1
        return True


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def _other(node: str, nodes: list[str], rng: random.Random) -> str:
    return rng.choice([n for n in nodes if n != node] or nodes)


async def register_worker(
    proc: int,
    clients: Clients,
    rec: Recorder,
    keys: KeyRotation,
    budget: Budget,
    rng: random.Random,
) -> None:
    """Random reads, writes and value-compare cas on the live register keys."""
    node = rng.choice(clients.nodes)
    last_seen: dict[str, str | None] = {}
    n = 0
    while budget.take():
        n += 1
        key = keys.pick(rng)
        kind: OpKind = rng.choices(REGISTER_OPS, weights=[4, 3, 3])[0]
        value = f"{'w' if kind == 'write' else 'c'}{proc}-{n}" if kind != "read" else None
        expected = last_seen.get(key) if kind == "cas" else None
        invoke = rec.now()
        fields: dict[str, object] = {}
        outcome: Outcome = "ok"
        try:
            fields = await _register_op(clients.kv(node), kind, key, value, expected)
        except grpc.aio.AioRpcError:
            outcome = "fail" if kind == "read" else "unknown"
        complete = rec.now() if outcome == "ok" else None
        op = Op.model_validate(
            {
                "process": proc,
                "kind": kind,
                "key": key,
                "value": value,
                "expected": expected,
                "invoke": invoke,
                "complete": complete,
                "outcome": outcome,
                "node": node,
                **fields,
            }
        )
        rec.ops.append(op)
        if outcome != "ok":
            node = _other(node, clients.nodes, rng)
        elif kind == "read":
            last_seen[key] = op.result
        elif kind == "write" or op.succeeded:
            last_seen[key] = value


async def _register_op(
    kv: rpc_pb2_grpc.KVStub, kind: str, key: str, value: str | None, expected: str | None
) -> dict[str, object]:
    k = key.encode()
    if kind == "read":
        resp = await kv.Range(rpc_pb2.RangeRequest(key=k), timeout=OP_TIMEOUT_S)
        return {"result": _text(resp.kvs[0].value) if resp.kvs else None}
    assert value is not None
    if kind == "write":
        put = await kv.Put(rpc_pb2.PutRequest(key=k, value=value.encode()), timeout=OP_TIMEOUT_S)
        return {"revision": put.header.revision}
    if expected is None:  # the key must be absent
        cmp = rpc_pb2.Compare(
            key=k, target=rpc_pb2.Compare.VERSION, result=rpc_pb2.Compare.EQUAL, version=0
        )
    else:
        cmp = rpc_pb2.Compare(
            key=k,
            target=rpc_pb2.Compare.VALUE,
            result=rpc_pb2.Compare.EQUAL,
            value=expected.encode(),
        )
    success = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=value.encode()))]
    txn = await kv.Txn(rpc_pb2.TxnRequest(compare=[cmp], success=success), timeout=OP_TIMEOUT_S)
    return {
        "succeeded": txn.succeeded,
        "revision": txn.header.revision if txn.succeeded else None,
    }


async def set_worker(
    proc: int, clients: Clients, rec: Recorder, prefix: str, budget: Budget, rng: random.Random
) -> None:
    """Adds unique elements to the set, reading the whole set back every so often."""
    node = rng.choice(clients.nodes)
    n = 0
    while budget.take():
        n += 1
        if n % READS_PER_SET_READ == 0:
            ok = await read_set(proc, clients, rec, prefix, node)
        else:
            ok = await _add(proc, clients, rec, prefix, node, f"p{proc}-{n}")
        if not ok:
            node = _other(node, clients.nodes, rng)


async def _add(proc: int, clients: Clients, rec: Recorder, prefix: str, node: str, e: str) -> bool:
    invoke = rec.now()
    key = f"{prefix}/set/{e}".encode()
    try:
        put = await clients.kv(node).Put(
            rpc_pb2.PutRequest(key=key, value=e.encode()), timeout=OP_TIMEOUT_S
        )
    except grpc.aio.AioRpcError:
        rec.ops.append(
            Op(process=proc, kind="add", key=f"{prefix}/set", value=e, invoke=invoke,
               complete=None, outcome="unknown", node=node)
        )  # fmt: skip
        return False
    rec.ops.append(
        Op(process=proc, kind="add", key=f"{prefix}/set", value=e, invoke=invoke,
           complete=rec.now(), outcome="ok", revision=put.header.revision, node=node)
    )  # fmt: skip
    return True


async def read_set(proc: int, clients: Clients, rec: Recorder, prefix: str, node: str) -> bool:
    """One linearizable read of the whole set through ``node``; False if it failed."""
    invoke = rec.now()
    start = f"{prefix}/set/".encode()
    try:
        resp = await clients.kv(node).Range(
            rpc_pb2.RangeRequest(key=start, range_end=prefix_end(start)), timeout=OP_TIMEOUT_S
        )
    except grpc.aio.AioRpcError:
        return False
    rec.ops.append(
        Op(process=proc, kind="read_set", key=f"{prefix}/set", invoke=invoke, complete=rec.now(),
           outcome="ok", elements=sorted(_text(kv.value) for kv in resp.kvs), node=node)
    )  # fmt: skip
    return True


async def read_register(proc: int, clients: Clients, rec: Recorder, key: str, node: str) -> bool:
    """One linearizable read of a register through ``node`` (recorded); False if it failed."""
    invoke = rec.now()
    try:
        fields = await _register_op(clients.kv(node), "read", key, None, None)
    except grpc.aio.AioRpcError:
        return False
    rec.ops.append(
        Op.model_validate(
            {"process": proc, "kind": "read", "key": key, "invoke": invoke,
             "complete": rec.now(), "outcome": "ok", "node": node, **fields}
        )
    )  # fmt: skip
    return True


async def current_revision(clients: Clients) -> int:
    """The store's revision now (a linearizable read through whichever node answers)."""
    last: grpc.aio.AioRpcError | None = None
    for node in clients.nodes:
        try:
            resp = await clients.kv(node).Range(
                rpc_pb2.RangeRequest(key=b"\0", limit=1, count_only=True), timeout=OP_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            last = exc
            continue
        return int(resp.header.revision)
    raise ConnectionError(f"no node answered a read: {last}")


@dataclass
class Watcher:
    """One logical watch stream over the whole keyspace, reopened on another node
    (from the revision after the last one delivered) whenever its stream breaks or stalls."""

    wid: int
    clients: Clients
    rec: Recorder
    start: int
    next_rev: int = 0
    reopened: int = 0

    def __post_init__(self) -> None:
        self.next_rev = self.start

    async def run(self) -> None:
        """Deliver events until cancelled."""
        i = self.wid
        while True:
            node = self.clients.nodes[i % len(self.clients.nodes)]
            i += 1
            with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                await self._stream(node)
            self.reopened += 1
            await asyncio.sleep(0.2)

    async def _stream(self, node: str) -> None:
        call = rpc_pb2_grpc.WatchStub(self.clients.channels[node]).Watch()
        try:
            create = rpc_pb2.WatchCreateRequest(
                key=b"\0", range_end=b"\0", start_revision=self.next_rev
            )
            await call.write(rpc_pb2.WatchRequest(create_request=create))
            while True:
                resp = await asyncio.wait_for(call.read(), WATCH_IDLE_S)
                if resp is grpc.aio.EOF or resp.canceled or resp.compact_revision:
                    return
                for ev in resp.events:
                    self._record(ev)
        finally:
            call.cancel()

    def _record(self, ev: kv_pb2.Event) -> None:
        value = None if ev.type == kv_pb2.Event.DELETE else _text(ev.kv.value)
        rev = int(ev.kv.mod_revision)
        self.rec.events.append(
            WatchEvent(
                watcher=self.wid, revision=rev, key=_text(ev.kv.key), value=value,
                received=self.rec.now(),
            )
        )  # fmt: skip
        self.next_rev = max(self.next_rev, rev + 1)

    async def catch_up(self, revision: int, timeout: float) -> bool:
        """Wait until every revision up to ``revision`` was delivered; record the span."""
        deadline = time.monotonic() + timeout
        while self.next_rev <= revision and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self.rec.spans.append(WatchSpan(watcher=self.wid, start=self.start, end=revision))
        return self.next_rev > revision
