"""Differential testing against etcd 3.4: the same operations, sent through the same gRPC
stubs to etcd and to Chainfire, their answers made comparable.

An operation knows how to build its request for one side (revisions are given relative
to the side's current revision, leases by the order they were granted in the sequence)
and how to send it. Answers are turned into plain data with revisions made relative to
the revision the sequence started at, lease IDs replaced by the order they first
appeared, and the header's cluster/member IDs and Raft term left out (they differ by
design). Errors become ``("error", gRPC code, details)``: etcd's clients match on both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
from google.protobuf.message import Message
from hypothesis import strategies as st

from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.proto import rpc_pb2_grpc

# A small alphabet, so that keys, prefixes and ranges collide often.
KEYS = (b"a", b"ab", b"abc", b"b", b"ba", b"c")
VALUES = (b"", b"v1", b"v2", b"x")
ALL_KEYS = (b"\0", b"\0")  # key, range_end: every key (etcdctl's `get "" --prefix`)
# A lease no sequence ever grants: requests naming it must fail alike on both sides.
MISSING_LEASE = 0x5EED
# TTLs no sequence lives long enough to see expire (expiry is timed: see the focused tests)
TTLS = (30, 60, 3600, 30, 60, 9_000_000_000, 9_000_000_001)
EXPLICIT_LEASE_IDS = (0, 0, 0, 7, 8, 0x7FFF_FFFF_FFFF_FFFF)
CALL_TIMEOUT = 10.0
# etcd removes compacted history in a backend batch that readers (watchers catching up)
# see only once committed, every 100 ms: until then they still find it. Watchers that
# replay history are opened this long after the last compaction (a margin for load).
COMPACTION_SETTLES = 0.3


def prefix_end(key: bytes) -> bytes:
    """etcd's GetPrefixRangeEnd: the range_end covering every key starting with ``key``."""
    for i in range(len(key) - 1, -1, -1):
        if key[i] < 0xFF:
            return key[:i] + bytes([key[i] + 1])
    return b"\0"


@dataclass
class Side:
    """One cluster under test (etcd or Chainfire), reached through one member."""

    name: str
    channel: grpc.aio.Channel
    kv: rpc_pb2_grpc.KVStub = field(init=False)
    lease: rpc_pb2_grpc.LeaseStub = field(init=False)
    watch: rpc_pb2_grpc.WatchStub = field(init=False)
    maintenance: rpc_pb2_grpc.MaintenanceStub = field(init=False)
    cluster: rpc_pb2_grpc.ClusterStub = field(init=False)
    auth: rpc_pb2_grpc.AuthStub = field(init=False)

    def __post_init__(self) -> None:
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.channel)
        self.auth = rpc_pb2_grpc.AuthStub(self.channel)


# -- one side's view of a sequence ------------------------------------------------------

# Fields whose value is a revision (made relative) or a lease ID (replaced by its label),
# by message name; fields that differ between implementations by design are dropped.
_REVISIONS = {
    "ResponseHeader": {"revision"},
    "KeyValue": {"create_revision", "mod_revision"},
    "WatchResponse": {"compact_revision"},
    "HashKVResponse": {"compact_revision"},
    "LeaderKey": {"rev"},
}
_LEASE_IDS = {
    "KeyValue": {"lease"},
    "LeaseGrantResponse": {"ID"},
    "LeaseKeepAliveResponse": {"ID"},
    "LeaseTimeToLiveResponse": {"ID"},
    "LeaseStatus": {"ID"},
    "LeaderKey": {"lease"},
}
_DROPPED = {"ResponseHeader": {"cluster_id", "member_id", "raft_term"}}


@dataclass
class Ctx:
    """A sequence on one side: where it started, where it is, which leases it granted."""

    side: Side
    base: int
    current: int = 0  # the latest revision a response reported
    compacted_at: float | None = None  # loop time of the last compaction it made
    granted: list[int] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.current = self.base

    def rev(self, rel: int | None) -> int:
        """The raw revision ``rel`` away from the current one (None: 0, i.e. unset)."""
        return 0 if rel is None else self.current + rel

    def lease(self, ref: int | None) -> int:
        """The raw lease ID for a reference: None no lease, -1 one never granted, else the
        ref-th lease granted in this sequence (modulo how many there are; revoked ones too)."""
        if ref is None:
            return 0
        if ref < 0 or not self.granted:
            return MISSING_LEASE
        return self.granted[ref % len(self.granted)]

    def norm_rev(self, raw: int) -> int | str:
        return raw if raw == 0 else f"r{raw - self.base:+d}"

    def norm_lease(self, raw: int) -> int | str:
        if raw == 0:
            return 0
        if raw == MISSING_LEASE:
            return "missing"
        return self.labels.setdefault(raw, f"lease{len(self.labels)}")

    def plain(self, msg: Message) -> dict[str, Any]:
        """A response as comparable data: set fields only, normalised as described above."""
        name = msg.DESCRIPTOR.name
        out: dict[str, Any] = {}
        for fd, value in msg.ListFields():
            if fd.name in _DROPPED.get(name, ()):
                continue
            if fd.message_type is not None:
                if fd.is_repeated:
                    out[fd.name] = [self.plain(m) for m in value]
                else:
                    out[fd.name] = self.plain(value)
            elif fd.name in _REVISIONS.get(name, ()):
                out[fd.name] = self.norm_rev(value)
            elif fd.name in _LEASE_IDS.get(name, ()):
                out[fd.name] = self.norm_lease(value)
            elif fd.enum_type is not None:
                names = fd.enum_type.values_by_number
                conv = [
                    names[v].name if v in names else v
                    for v in (value if fd.is_repeated else [value])
                ]
                out[fd.name] = conv if fd.is_repeated else conv[0]
            else:
                out[fd.name] = list(value) if fd.is_repeated else value
        return out

    def answer(self, resp: Message) -> dict[str, Any]:
        """A response as plain data; its header moves the current revision on."""
        header = getattr(resp, "header", None)
        if header is not None and header.revision:
            self.current = header.revision
        return self.plain(resp)

    async def call(self, rpc: Callable[..., Awaitable[Message]], req: Message) -> Any:
        """Send one unary request; its plain response, or ``("error", code, details)``."""
        try:
            resp = await rpc(req, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            return ("error", exc.code().name, exc.details())
        return self.answer(resp)


# -- operations -------------------------------------------------------------------------

# Revisions relative to the current one: None for 0 (unset), mostly the past, sometimes
# the future.
revs = st.one_of(st.none(), st.integers(-6, 0), st.integers(-6, 0), st.integers(1, 3))
# Leases a request names: mostly one granted in the sequence, sometimes none or a missing one
lease_refs = st.one_of(st.none(), st.none(), st.integers(0, 3), st.just(-1))
held_leases = st.one_of(st.integers(0, 3), st.integers(0, 3), st.just(-1))
keys = st.sampled_from(KEYS)
# flags that make a request fail on their own when set without care
rarely = st.sampled_from((False, False, False, True))


@st.composite
def ranges(draw: st.DrawFn, empty_key: bool = True) -> tuple[bytes, bytes]:
    """(key, range_end): one key, a prefix, ``>= key``, an explicit (maybe empty) range."""
    key = draw(st.sampled_from((*KEYS, *KEYS, b"\0", *((b"",) if empty_key else ()))))
    end = draw(st.sampled_from((b"", b"", b"\0", "prefix", b"b", b"c", b"d", b"ab")))
    return key, prefix_end(key) if end == "prefix" else end  # type: ignore[return-value]


class Op:
    """One request; subclasses send it for a side (KV ones also build it, so that a Txn
    can carry it)."""

    def request(self, ctx: Ctx) -> Message:
        raise NotImplementedError

    async def run(self, ctx: Ctx) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Range(Op):
    key: bytes
    range_end: bytes
    limit: int = 0
    sort_order: int = 0
    sort_target: int = 0
    keys_only: bool = False
    count_only: bool = False
    min_mod: int | None = None
    max_mod: int | None = None
    min_create: int | None = None
    max_create: int | None = None
    revision: int | None = None
    serializable: bool = False

    def request(self, ctx: Ctx) -> pb.RangeRequest:
        return pb.RangeRequest(
            key=self.key,
            range_end=self.range_end,
            limit=self.limit,
            sort_order=self.sort_order,  # type: ignore[arg-type]
            sort_target=self.sort_target,  # type: ignore[arg-type]
            keys_only=self.keys_only,
            count_only=self.count_only,
            min_mod_revision=ctx.rev(self.min_mod),
            max_mod_revision=ctx.rev(self.max_mod),
            min_create_revision=ctx.rev(self.min_create),
            max_create_revision=ctx.rev(self.max_create),
            revision=ctx.rev(self.revision),
            serializable=self.serializable,
        )

    async def run(self, ctx: Ctx) -> Any:
        return await ctx.call(ctx.side.kv.Range, self.request(ctx))


@dataclass(frozen=True)
class Put(Op):
    key: bytes
    value: bytes
    lease: int | None = None
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False

    def request(self, ctx: Ctx) -> pb.PutRequest:
        return pb.PutRequest(
            key=self.key,
            value=self.value,
            lease=ctx.lease(self.lease),
            prev_kv=self.prev_kv,
            ignore_value=self.ignore_value,
            ignore_lease=self.ignore_lease,
        )

    async def run(self, ctx: Ctx) -> Any:
        return await ctx.call(ctx.side.kv.Put, self.request(ctx))


@dataclass(frozen=True)
class Delete(Op):
    key: bytes
    range_end: bytes
    prev_kv: bool = False

    def request(self, ctx: Ctx) -> pb.DeleteRangeRequest:
        return pb.DeleteRangeRequest(key=self.key, range_end=self.range_end, prev_kv=self.prev_kv)

    async def run(self, ctx: Ctx) -> Any:
        return await ctx.call(ctx.side.kv.DeleteRange, self.request(ctx))


@dataclass(frozen=True)
class Cmp:
    key: bytes
    range_end: bytes
    target: int
    result: int
    version: int = 0
    revision: int | None = None  # CREATE and MOD
    value: bytes = b""
    lease: int | None = None

    def message(self, ctx: Ctx) -> pb.Compare:
        c = pb.Compare(key=self.key, range_end=self.range_end)
        c.target = self.target  # type: ignore[assignment]
        c.result = self.result  # type: ignore[assignment]
        if self.target == pb.Compare.VERSION:
            c.version = self.version
        elif self.target == pb.Compare.CREATE:
            c.create_revision = ctx.rev(self.revision)
        elif self.target == pb.Compare.MOD:
            c.mod_revision = ctx.rev(self.revision)
        elif self.target == pb.Compare.VALUE:
            c.value = self.value
        else:
            c.lease = ctx.lease(self.lease)
        return c


@dataclass(frozen=True)
class Txn(Op):
    compare: tuple[Cmp, ...]
    success: tuple[Op, ...]
    failure: tuple[Op, ...]

    def request(self, ctx: Ctx) -> pb.TxnRequest:
        return pb.TxnRequest(
            compare=[c.message(ctx) for c in self.compare],
            success=[_request_op(op, ctx) for op in self.success],
            failure=[_request_op(op, ctx) for op in self.failure],
        )

    async def run(self, ctx: Ctx) -> Any:
        return await ctx.call(ctx.side.kv.Txn, self.request(ctx))


def _request_op(op: Op, ctx: Ctx) -> pb.RequestOp:
    req = op.request(ctx)
    if isinstance(req, pb.RangeRequest):
        return pb.RequestOp(request_range=req)
    if isinstance(req, pb.PutRequest):
        return pb.RequestOp(request_put=req)
    if isinstance(req, pb.DeleteRangeRequest):
        return pb.RequestOp(request_delete_range=req)
    assert isinstance(req, pb.TxnRequest), req
    return pb.RequestOp(request_txn=req)


@dataclass(frozen=True)
class Compact(Op):
    revision: int | None
    physical: bool = False

    async def run(self, ctx: Ctx) -> Any:
        req = pb.CompactionRequest(revision=ctx.rev(self.revision), physical=self.physical)
        out = await ctx.call(ctx.side.kv.Compact, req)
        if isinstance(out, dict):
            ctx.compacted_at = asyncio.get_running_loop().time()
        return out


@dataclass(frozen=True)
class LeaseGrant(Op):
    ttl: int
    explicit_id: int = 0

    async def run(self, ctx: Ctx) -> Any:
        req = pb.LeaseGrantRequest(TTL=self.ttl, ID=self.explicit_id)
        try:
            resp = await ctx.side.lease.LeaseGrant(req, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            return ("error", exc.code().name, exc.details())
        ctx.granted.append(resp.ID)
        return ctx.answer(resp)


@dataclass(frozen=True)
class LeaseRevoke(Op):
    lease: int | None

    async def run(self, ctx: Ctx) -> Any:
        return await ctx.call(
            ctx.side.lease.LeaseRevoke, pb.LeaseRevokeRequest(ID=ctx.lease(self.lease))
        )


@dataclass(frozen=True)
class LeaseTimeToLive(Op):
    lease: int | None
    keys: bool = False

    async def run(self, ctx: Ctx) -> Any:
        req = pb.LeaseTimeToLiveRequest(ID=ctx.lease(self.lease), keys=self.keys)
        out = await ctx.call(ctx.side.lease.LeaseTimeToLive, req)
        if isinstance(out, dict) and out.get("TTL", 0) > 0:
            # the time left depends on when the call ran; its rounding has its own test
            out["TTL"] = "left"
        if isinstance(out, dict) and "keys" in out:
            out["keys"].sort()  # etcd lists them in Go map order, i.e. any order
        return out


@dataclass(frozen=True)
class LeaseLeases(Op):
    async def run(self, ctx: Ctx) -> Any:
        out = await ctx.call(ctx.side.lease.LeaseLeases, pb.LeaseLeasesRequest())
        if isinstance(out, dict):
            # etcd lists leases by expiry, which the test cannot order; compare as sets
            out["leases"] = sorted(out.get("leases", []), key=repr)
        return out


@dataclass(frozen=True)
class LeaseKeepAlive(Op):
    lease: int | None

    async def run(self, ctx: Ctx) -> Any:
        try:
            resp = await keep_alive_once(ctx.side.lease, ctx.lease(self.lease))
        except grpc.aio.AioRpcError as exc:
            return ("error", exc.code().name, exc.details())
        return ctx.answer(resp)


async def keep_alive_once(stub: rpc_pb2_grpc.LeaseStub, lease_id: int) -> pb.LeaseKeepAliveResponse:
    """One keep-alive on its own stream (the stream stays open until the answer came)."""
    answered = asyncio.Event()

    async def requests() -> AsyncIterator[pb.LeaseKeepAliveRequest]:
        yield pb.LeaseKeepAliveRequest(ID=lease_id)
        await answered.wait()

    call = stub.LeaseKeepAlive(requests(), timeout=CALL_TIMEOUT)
    try:
        async for resp in call:
            return resp  # type: ignore[no-any-return]
        raise AssertionError("keep-alive stream ended without an answer")
    finally:
        answered.set()
        call.cancel()


range_ops = st.builds(
    lambda kr, **kw: Range(kr[0], kr[1], **kw),
    ranges(),
    limit=st.sampled_from((0, 0, 1, 2, 3, -1)),
    sort_order=st.sampled_from((0, 0, 1, 2)),
    sort_target=st.sampled_from((0, 0, 1, 2, 3, 4)),
    keys_only=st.booleans(),
    count_only=st.booleans(),
    min_mod=revs,
    max_mod=revs,
    min_create=revs,
    max_create=revs,
    revision=revs,
    serializable=st.booleans(),
)


@st.composite
def put_ops(draw: st.DrawFn) -> Put:
    """Puts, with ignore_value/ignore_lease mostly used as meant (no value, no lease)."""
    ignore_value, ignore_lease = draw(rarely), draw(rarely)
    return Put(
        key=draw(st.sampled_from((*KEYS, *KEYS, b""))),
        value=draw(st.sampled_from((b"", b"", b"x") if ignore_value else VALUES)),
        lease=draw(
            st.one_of(st.none(), st.none(), st.none(), lease_refs) if ignore_lease else lease_refs
        ),
        prev_kv=draw(st.booleans()),
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


delete_ops = st.builds(lambda kr, prev_kv: Delete(kr[0], kr[1], prev_kv), ranges(), st.booleans())
compares = st.builds(
    lambda kr, **kw: Cmp(kr[0], kr[1], **kw),
    st.one_of(st.tuples(keys, st.just(b"")), ranges(empty_key=False)),
    target=st.sampled_from((0, 1, 2, 3, 4)),  # VERSION CREATE MOD VALUE LEASE
    result=st.sampled_from((0, 1, 2, 3)),  # EQUAL GREATER LESS NOT_EQUAL
    version=st.integers(0, 3),
    revision=revs,
    value=st.sampled_from(VALUES),
    lease=lease_refs,
)


def txn_ops(inner: st.SearchStrategy[Op]) -> st.SearchStrategy[Txn]:
    ops = st.lists(inner, max_size=3).map(tuple)
    return st.builds(Txn, st.lists(compares, max_size=3).map(tuple), ops, ops)


simple_ops = st.one_of(range_ops, put_ops(), delete_ops)
nested_txns = txn_ops(st.one_of(simple_ops, txn_ops(simple_ops)))
grants = st.builds(LeaseGrant, st.sampled_from(TTLS), st.sampled_from(EXPLICIT_LEASE_IDS))
lease_ops = st.one_of(
    grants,
    st.builds(LeaseRevoke, held_leases),
    st.builds(LeaseTimeToLive, held_leases, st.booleans()),
    st.builds(LeaseKeepAlive, held_leases),
    st.just(LeaseLeases()),
)
operations = st.one_of(
    put_ops(),
    put_ops(),
    put_ops(),
    grants,
    range_ops,
    range_ops,
    delete_ops,
    nested_txns,
    nested_txns,
    st.builds(Compact, revs, st.booleans()),
    lease_ops,
)


# -- watchers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchSpec:
    """A watcher opened at the start of a sequence or after it (then it replays history)."""

    key: bytes
    range_end: bytes
    at_end: bool = False
    start: int | None = None  # relative start_revision (None: from now)
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False
    watch_id: int = 0  # explicit ID (0: the server picks)
    cancel: bool = False  # cancelled once it has seen everything

    def request(self, ctx: Ctx) -> pb.WatchRequest:
        filters = [f for f, on in ((0, self.no_put), (1, self.no_delete)) if on]
        return pb.WatchRequest(
            create_request=pb.WatchCreateRequest(
                key=self.key,
                range_end=self.range_end,
                start_revision=ctx.rev(self.start),
                prev_kv=self.prev_kv,
                filters=filters,  # type: ignore[arg-type]
                progress_notify=self.progress_notify,
                watch_id=self.watch_id,
            )
        )


watch_specs = st.builds(
    lambda kr, at_end, start, **kw: WatchSpec(
        kr[0],
        kr[1],
        at_end=at_end,
        # opened after the operations: replays history (maybe compacted); before: a
        # revision the operations will reach
        start=start if at_end else (None if start is None else abs(start) % 3 + 1),
        **kw,
    ),
    ranges(empty_key=False),
    at_end=st.booleans(),
    start=st.one_of(st.none(), st.integers(-8, 1), st.integers(-8, 1)),
    prev_kv=st.booleans(),
    no_put=rarely,
    no_delete=rarely,
    progress_notify=st.booleans(),
    watch_id=st.sampled_from((0, 0, 0, 1, 2)),
    cancel=st.booleans(),
)


class WatchSession:
    """One Watch stream: requests go in through a queue, every response is kept."""

    def __init__(self, stub: rpc_pb2_grpc.WatchStub) -> None:
        self._requests: asyncio.Queue[pb.WatchRequest | None] = asyncio.Queue()
        self.responses: list[pb.WatchResponse] = []
        self._changed = asyncio.Event()
        self._call = stub.Watch(self._iterate())
        self._reader = asyncio.create_task(self._read())

    async def _iterate(self) -> AsyncIterator[pb.WatchRequest]:
        while (req := await self._requests.get()) is not None:
            yield req

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for resp in self._call:
                self.responses.append(resp)
                self._changed.set()

    def send(self, req: pb.WatchRequest) -> None:
        self._requests.put_nowait(req)

    async def wait_for(
        self, done: Callable[[list[pb.WatchResponse]], object], timeout: float = 10.0
    ) -> bool:
        """Wait until ``done(responses)``; False if it did not happen within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(self.responses):
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def close(self) -> None:
        self._requests.put_nowait(None)
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def _create(session: WatchSession, ctx: Ctx, spec: WatchSpec) -> pb.WatchResponse | None:
    """Open one watcher and wait for its ``created`` answer."""
    n = sum(1 for r in session.responses if r.created)
    session.send(spec.request(ctx))
    if not await session.wait_for(lambda rs: sum(1 for r in rs if r.created) > n):
        return None
    return [r for r in session.responses if r.created][n]


def _seen_through(responses: Sequence[pb.WatchResponse], watch_id: int, rev: int) -> bool:
    mine = [r for r in responses if r.watch_id == watch_id]
    return any(r.canceled for r in mine) or any(
        ev.kv.mod_revision >= rev for r in mine for ev in r.events
    )


# -- a whole sequence ----------------------------------------------------------------------


async def reset(side: Side) -> int:
    """Revoke every lease and delete every key; the revision the sequence starts at."""
    leases = await side.lease.LeaseLeases(pb.LeaseLeasesRequest(), timeout=CALL_TIMEOUT)
    for status in leases.leases:
        with contextlib.suppress(grpc.aio.AioRpcError):  # expired meanwhile
            await side.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=status.ID), timeout=CALL_TIMEOUT)
    resp = await side.kv.DeleteRange(
        pb.DeleteRangeRequest(key=ALL_KEYS[0], range_end=ALL_KEYS[1]), timeout=CALL_TIMEOUT
    )
    return int(resp.header.revision)


async def _sentinel(ctx: Ctx, specs: Sequence[WatchSpec]) -> tuple[int, int]:
    """Put then delete one key in every watched range (two revisions) so that every
    watcher has a last event to wait for; returns (put revision, delete revision)."""
    sentinel_keys = sorted({s.key for s in specs})
    put = pb.TxnRequest(
        success=[
            pb.RequestOp(request_put=pb.PutRequest(key=k, value=b"sentinel")) for k in sentinel_keys
        ]
    )
    dele = pb.TxnRequest(
        success=[
            pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=k)) for k in sentinel_keys
        ]
    )
    r1 = await ctx.side.kv.Txn(put, timeout=CALL_TIMEOUT)
    r2 = await ctx.side.kv.Txn(dele, timeout=CALL_TIMEOUT)
    return int(r1.header.revision), int(r2.header.revision)


def _transcript(
    ctx: Ctx, responses: Sequence[pb.WatchResponse], watch_id: int, until: int
) -> list[Any]:
    """What one watcher was told, events before revision ``until`` flattened (how etcd
    batches them into responses depends on timing), progress notifications left out (when
    they come depends on timing too: a scenario compares them)."""
    out: list[Any] = []
    for r in responses:
        if r.watch_id != watch_id or r.created:
            continue
        if not (r.events or r.canceled or r.compact_revision):
            continue  # a progress notification
        events = [ctx.plain(ev) for ev in r.events if ev.kv.mod_revision < until]
        if events:
            out.extend(("event", ev) for ev in events)
        elif not r.events:
            out.append(
                (
                    "response",
                    ctx.plain(
                        pb.WatchResponse(
                            watch_id=r.watch_id,
                            canceled=r.canceled,
                            compact_revision=r.compact_revision,
                            cancel_reason=r.cancel_reason,
                        )
                    ),
                )
            )
    return out


def _canceled(responses: Sequence[pb.WatchResponse], watch_id: int) -> int:
    """How many times the watcher was told it is cancelled (by compaction, by request)."""
    return sum(1 for r in responses if r.watch_id == watch_id and r.canceled)


def in_creation_order(watches: Sequence[WatchSpec]) -> list[WatchSpec]:
    """Watchers opened before the operations first, then those opened after them."""
    return [s for s in watches if not s.at_end] + [s for s in watches if s.at_end]


async def _sync(
    ctx: Ctx, session: WatchSession, live: list[tuple[WatchSpec, pb.WatchResponse]]
) -> int:
    """Wait until every live watcher has been told everything up to the sentinel
    revisions; returns the first sentinel revision (its events are not compared)."""
    put_rev, del_rev = await _sentinel(ctx, [s for s, _ in live])
    for spec, created in live:
        start = ctx.rev(spec.start)
        waits = [
            rev
            for rev, filtered in ((put_rev, spec.no_put), (del_rev, spec.no_delete))
            if not filtered and rev >= start
        ]
        if waits:
            await session.wait_for(
                partial(_seen_through, watch_id=created.watch_id, rev=min(waits))
            )
        elif spec.at_end and spec.start is not None:
            # filters hide every event: only a compaction would say anything (etcd checks
            # unsynced watchers every 100 ms)
            await session.wait_for(partial(_canceled, watch_id=created.watch_id), timeout=1.0)
    return put_rev


async def _cancel(session: WatchSession, watch_id: int) -> None:
    """Cancel a watcher and wait for the answer (if any: etcd answers only known IDs)."""
    before = _canceled(session.responses, watch_id)
    session.send(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=watch_id)))
    await session.wait_for(lambda rs: _canceled(rs, watch_id) > before, timeout=2.0)


async def run_sequence(
    side: Side, ops: Sequence[Op], watches: Sequence[WatchSpec]
) -> dict[str, Any]:
    """Run one generated sequence on one side; everything it answered, comparable."""
    ctx = Ctx(side, await reset(side))
    session = WatchSession(side.watch)
    try:
        created = [await _create(session, ctx, s) for s in watches if not s.at_end]
        results = [await op.run(ctx) for op in ops]
        if ctx.compacted_at is not None:
            settled = ctx.compacted_at + COMPACTION_SETTLES
            await asyncio.sleep(max(0.0, settled - asyncio.get_running_loop().time()))
        created += [await _create(session, ctx, s) for s in watches if s.at_end]
        live = [
            (spec, c)
            for spec, c in zip(in_creation_order(watches), created, strict=True)
            if c is not None and not c.canceled
        ]
        until = await _sync(ctx, session, live) if live else 1 << 62
        for spec, c in live:
            if spec.cancel:
                await _cancel(session, c.watch_id)
        watchers = [
            {
                "created": None if c is None else ctx.plain(c),
                "seen": [] if c is None else _transcript(ctx, session.responses, c.watch_id, until),
            }
            for c in created
        ]
    finally:
        await session.close()
    return {"ops": results, "watchers": watchers}


def first_difference(
    ops: Sequence[Op], watches: Sequence[WatchSpec], etcd: dict[str, Any], chainfire: dict[str, Any]
) -> str | None:
    """A readable account of where the two sides first disagree (None if they agree)."""
    for i, (op, a, b) in enumerate(zip(ops, etcd["ops"], chainfire["ops"], strict=True)):
        if a != b:
            return f"op {i} {op!r}\n  etcd:      {a!r}\n  chainfire: {b!r}"
    for spec, a, b in zip(
        in_creation_order(watches), etcd["watchers"], chainfire["watchers"], strict=True
    ):
        if a != b:
            return f"watcher {spec!r}\n  etcd:      {a!r}\n  chainfire: {b!r}"
    return None
