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

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.client import prefix_end
from plasmacloud.chainfire.mvcc import WatchEvent
from plasmacloud.chainfire.node import ChainfireNode
from plasmacloud.chainfire.proto import kv_pb2, rpc_pb2
from plasmacloud.chainfire.watch import Watcher


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


async def contend(
    node: ChainfireNode, name: bytes, lease: int, value: bytes = b""
) -> tuple[bytes, int]:
    """Create (or find) this lease's contender key; (key, its create revision).

    An unknown lease fails the put inside the txn with etcd's lease-not-found error.
    """
    key = contender_key(name, lease)
    txn = rpc_pb2.TxnRequest(
        compare=[
            rpc_pb2.Compare(
                key=key,
                target=rpc_pb2.Compare.CREATE,
                result=rpc_pb2.Compare.EQUAL,
                create_revision=0,
            )
        ],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))
        ],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
    )
    resp: rpc_pb2.TxnResponse = await node.write(txn, grows=True)
    if resp.succeeded:
        return key, resp.header.revision
    return key, resp.responses[0].response_range.kvs[0].create_revision


async def acquire(
    node: ChainfireNode, name: bytes, lease: int, value: bytes = b""
) -> tuple[bytes, int]:
    """Wait for ownership of ``name``; (key, fencing revision). Gives up the key on cancel."""
    key, rev = await contend(node, name, lease, value)
    try:
        await wait_turn(node, name, rev)
    except BaseException:
        with contextlib.suppress(errors.EtcdError):
            await node.write(rpc_pb2.DeleteRangeRequest(key=key))
        raise
    return key, rev
