"""Server-side versions of clientv3's concurrency recipes (mutex and election).

A contender creates ``<name>/<lease hex>`` (attached to its lease) and owns the lock or
leadership once no key under ``<name>/`` has a smaller create revision. That create
revision is a fencing token: it only grows, so a resource that remembers the highest
token it has seen can refuse a stale holder (for instance one whose lease expired while
it was paused). Put it in your writes, e.g. a Txn comparing ``CREATE(lock key) ==
token``, or store it beside the data you guard and reject smaller ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.mvcc import WatchEvent
from plasmacloud.chainfire.node import ChainfireNode
from plasmacloud.chainfire.proto import kv_pb2, rpc_pb2
from plasmacloud.chainfire.watch import Watcher
from plasmacloud.common.keyrange import prefix_end


def contender_key(name: bytes, lease: int) -> bytes:
    """The key a lease's holder creates for a lock or an election (clientv3's format)."""
    return name + b"/" + f"{lease:x}".encode()


@contextlib.asynccontextmanager
async def watch_key(
    node: ChainfireNode, key: bytes, range_end: bytes, start_rev: int
) -> AsyncIterator[asyncio.Queue[WatchEvent | None]]:
    """A queue receiving every change to key/range_end from ``start_rev`` on.

    ``None`` in the queue means history was lost (a snapshot skipped past compacted
    changes): the reader must look at the current state again.
    """
    queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()

    def sink(_: Watcher, events: list[WatchEvent], _as_of: int) -> bool:
        for ev in events:
            queue.put_nowait(ev)
        return True

    watcher = Watcher(
        key=key,
        range_end=range_end,
        sink=sink,
        on_compacted=lambda _w, _rev: queue.put_nowait(None),
    )
    if node.hub.subscribe(watcher, start_rev):
        raise errors.COMPACTED
    try:
        yield queue
    finally:
        node.hub.unsubscribe(watcher)


async def wait_deleted(node: ChainfireNode, key: bytes, after_rev: int) -> None:
    """Return once ``key`` is deleted after ``after_rev`` (or its history was lost)."""
    async with watch_key(node, key, b"", after_rev + 1) as queue:
        while True:
            ev = await queue.get()
            if ev is None or not ev.is_put:
                return  # deleted, or history lost: the caller re-checks either way


def first_contender(node: ChainfireNode, name: bytes) -> kv_pb2.KeyValue | None:
    """The oldest key under ``<name>/`` (the owner), from local state."""
    prefix = name + b"/"
    resp = node.store.range(
        rpc_pb2.RangeRequest(
            key=prefix,
            range_end=prefix_end(prefix),
            sort_target=rpc_pb2.RangeRequest.CREATE,
            sort_order=rpc_pb2.RangeRequest.ASCEND,
            limit=1,
        )
    )
    return resp.kvs[0] if resp.kvs else None


async def wait_turn(node: ChainfireNode, name: bytes, my_rev: int) -> None:
    """Block until no contender under ``<name>/`` was created before ``my_rev``."""
    prefix = name + b"/"
    while True:
        resp = node.store.range(
            rpc_pb2.RangeRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                max_create_revision=my_rev - 1,
                sort_target=rpc_pb2.RangeRequest.CREATE,
                sort_order=rpc_pb2.RangeRequest.DESCEND,
                limit=1,
            )
        )
        if not resp.kvs:
            return
        await wait_deleted(node, resp.kvs[0].key, resp.header.revision)


@dataclass(frozen=True)
class Contender:
    """A lease's contender key for a lock or an election, as the txn placing it found it."""

    key: bytes
    rev: int  # its create revision: the fencing token
    header: rpc_pb2.ResponseHeader  # of the txn that created (or found) it
    found: kv_pb2.KeyValue | None  # the key as it already was, if it was not created now


async def contend(node: ChainfireNode, name: bytes, lease: int, value: bytes = b"") -> Contender:
    """Create (or find) this lease's contender key.

    An unknown lease fails the put inside the txn with etcd's lease-not-found error.
    """
    key = contender_key(name, lease)
    txn = rpc_pb2.TxnRequest(
        compare=[created_at(key, 0)],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))
        ],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
    )
    resp: rpc_pb2.TxnResponse = await node.write(txn, grows=True)
    if resp.succeeded:
        return Contender(key, resp.header.revision, resp.header, None)
    found = resp.responses[0].response_range.kvs[0]
    return Contender(key, found.create_revision, resp.header, found)


def created_at(key: bytes, rev: int) -> rpc_pb2.Compare:
    """Holds while ``key`` is the one created at ``rev`` (0: while there is no such key)."""
    return rpc_pb2.Compare(
        key=key,
        target=rpc_pb2.Compare.CREATE,
        result=rpc_pb2.Compare.EQUAL,
        create_revision=rev,
    )


async def set_value(
    node: ChainfireNode, key: bytes, rev: int, lease: int, value: bytes
) -> rpc_pb2.TxnResponse:
    """Give a contender key a new value if it is still the one created at ``rev``."""
    txn = rpc_pb2.TxnRequest(
        compare=[created_at(key, rev)],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))
        ],
    )
    resp: rpc_pb2.TxnResponse = await node.write(txn, grows=True)
    return resp


async def acquire(
    node: ChainfireNode, name: bytes, lease: int, value: bytes = b"", *, update: bool = False
) -> Contender:
    """Wait for ownership of ``name``. Gives up the key on cancel.

    ``update``: a key this lease already had gets ``value`` before the wait (an election's
    re-campaign, as clientv3's Campaign does it); it keeps its value otherwise (a lock).
    """
    c = await contend(node, name, lease, value)
    try:
        if update and c.found is not None and c.found.value != value:
            await set_value(node, c.key, c.rev, lease, value)
        await wait_turn(node, name, c.rev)
    except BaseException:
        with contextlib.suppress(errors.EtcdError):
            await node.write(rpc_pb2.DeleteRangeRequest(key=c.key))
        raise
    return c
