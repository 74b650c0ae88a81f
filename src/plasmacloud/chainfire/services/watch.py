"""etcdserverpb.Watch: the bidirectional watch stream.

One stream carries many watchers. Responses (created, events, canceled, progress) go
through one queue per stream, so their order on the wire is the order they were made:
a watcher's ``created`` reply always precedes its first events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.mvcc import WatchEvent
from plasmacloud.chainfire.node import ChainfireNode
from plasmacloud.chainfire.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from plasmacloud.chainfire.services.base import Servicer, count
from plasmacloud.chainfire.watch import Watcher

# etcd's default --experimental-watch-progress-notify-interval (10 minutes).
DEFAULT_PROGRESS_INTERVAL = 600.0
# Responses queued for a client that reads slowly before its watchers are parked; they
# resume from history once the queue is down to RESUME_BELOW (etcd's unsynced watchers).
MAX_QUEUED = 1000
RESUME_BELOW = 100


def _without_prev(event: kv_pb2.Event) -> kv_pb2.Event:
    return kv_pb2.Event(type=event.type, kv=event.kv)


class _Stream:
    """State of one Watch RPC: its watchers and its outgoing queue."""

    def __init__(self, node: ChainfireNode) -> None:
        self.node = node
        self.watchers: dict[int, Watcher] = {}
        # watchers ended by compaction keep their ID until the client cancels it, as in
        # etcd (a new watcher cannot take it; the cancel is answered)
        self.ended: set[int] = set()
        self.next_id = 0
        # watchers sent events since the last progress tick: etcd skips their notification
        self.busy: set[int] = set()
        self.parked: list[Watcher] = []
        self.queue: asyncio.Queue[rpc_pb2.WatchResponse | None] = asyncio.Queue()
        node.hub.on_close(self.shutdown)

    def shutdown(self) -> None:
        self.queue.put_nowait(None)

    def close(self) -> None:
        for w in self.watchers.values():
            self.node.hub.unsubscribe(w)
        self.watchers.clear()
        self.node.hub.discard_on_close(self.shutdown)

    def _send(self, **fields: object) -> None:
        header = fields.pop("header", None) or self.node.header()
        self.queue.put_nowait(rpc_pb2.WatchResponse(header=header, **fields))  # type: ignore[arg-type]

    def _deliver(self, w: Watcher, events: list[WatchEvent], as_of: int) -> bool:
        if self.queue.qsize() >= MAX_QUEUED:
            self.parked.append(w)
            return False
        out = [
            ev.event if w.prev_kv or ev.prev is None else _without_prev(ev.event) for ev in events
        ]
        self._send(header=self.node.header(as_of), watch_id=w.watch_id, events=out)
        self.busy.add(w.watch_id)
        return True

    def resume(self) -> None:
        """Resubscribe parked watchers from where they stopped (history replays the gap)."""
        parked, self.parked = self.parked, []
        for w in parked:
            if self.watchers.get(w.watch_id) is not w:
                continue  # cancelled meanwhile
            compacted = self.node.hub.subscribe(w, w.next_rev)
            if compacted:
                self._compacted(w, compacted)

    async def read(
        self, requests: AsyncIterator[rpc_pb2.WatchRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """Handle create/cancel/progress requests until the client stops sending."""
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    try:
                        await self.node.authorize(context, "Watch", req.create_request)
                    except errors.EtcdError as exc:
                        # etcd refuses one watcher, not the stream
                        self._send(
                            watch_id=req.create_request.watch_id,
                            created=True,
                            canceled=True,
                            cancel_reason=exc.message,
                        )
                        continue
                    self.create(req.create_request)
                elif kind == "cancel_request":
                    self.cancel(req.cancel_request.watch_id)
                elif kind == "progress_request":
                    self._send(watch_id=-1)  # -1: for every watcher of the stream

    def _refuse(self, reason: str) -> None:
        """etcd answers a watcher it cannot create as created, canceled, with ID -1."""
        self._send(watch_id=-1, created=True, canceled=True, cancel_reason=reason)

    def create(self, cr: rpc_pb2.WatchCreateRequest) -> None:
        if cr.range_end not in (b"", b"\0") and cr.key >= cr.range_end:
            self._refuse("mvcc: watcher range is empty")
            return
        watch_id = cr.watch_id
        if watch_id == 0:  # etcd's AutoWatchID: the next unused ID, never one used before
            while self._taken(self.next_id):
                self.next_id += 1
            watch_id = self.next_id
            self.next_id += 1
        elif self._taken(watch_id):
            self._refuse("mvcc: duplicate watch ID provided on the WatchStream")
            return
        filters = set(cr.filters)
        w = Watcher(
            key=cr.key,
            range_end=cr.range_end,
            sink=self._deliver,
            no_put=rpc_pb2.WatchCreateRequest.NOPUT in filters,
            no_delete=rpc_pb2.WatchCreateRequest.NODELETE in filters,
            watch_id=watch_id,
            prev_kv=cr.prev_kv,
            progress_notify=cr.progress_notify,
            on_compacted=self._compacted,
        )
        self._send(watch_id=watch_id, created=True)
        compacted = self.node.hub.subscribe(w, cr.start_revision)
        if compacted:
            self._compacted(w, compacted)
            return
        self.watchers[watch_id] = w

    def _taken(self, watch_id: int) -> bool:
        return watch_id in self.watchers or watch_id in self.ended

    def _compacted(self, w: Watcher, compact_revision: int) -> None:
        self.watchers.pop(w.watch_id, None)
        self.ended.add(w.watch_id)
        self._send(watch_id=w.watch_id, compact_revision=compact_revision, canceled=True)

    def cancel(self, watch_id: int) -> None:
        w = self.watchers.pop(watch_id, None)
        if w is not None:
            self.node.hub.unsubscribe(w)
        elif watch_id in self.ended:
            self.ended.discard(watch_id)
        else:
            return  # unknown: etcd does not answer
        self._send(watch_id=watch_id, canceled=True)

    def progress(self) -> None:
        """A progress tick: tell every idle watcher that asked (not one catching up) the
        current revision."""
        for w in self.watchers.values():
            if w.progress_notify and w.watch_id not in self.busy and w not in self.parked:
                self._send(watch_id=w.watch_id)
        self.busy.clear()


class WatchServicer(Servicer, rpc_pb2_grpc.WatchServicer):
    service = "etcdserverpb.Watch"

    def __init__(
        self, node: ChainfireNode, progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    ) -> None:
        super().__init__(node)
        self.progress_interval = progress_interval

    async def Watch(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[rpc_pb2.WatchRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        count(self.node, f"{self.service}/Watch")
        stream = _Stream(self.node)
        tasks = [
            asyncio.create_task(stream.read(request_iterator, context)),
            asyncio.create_task(self._progress(stream)),
        ]
        try:
            while True:
                resp = await stream.queue.get()
                if resp is None:
                    return
                yield resp
                if stream.parked and stream.queue.qsize() < RESUME_BELOW:
                    stream.resume()
        finally:
            for task in tasks:
                task.cancel()
            stream.close()

    async def _progress(self, stream: _Stream) -> None:
        while True:
            await asyncio.sleep(self.progress_interval)
            stream.progress()
