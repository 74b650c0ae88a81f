"""WatchHub: ordering, filters, and catch-up after a snapshot replaces the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasmacloud.chainfire.mvcc import MvccStore, WatchEvent
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.services import watch as watch_service
from plasmacloud.chainfire.watch import Watcher, WatchHub, in_range

from .conftest import Applier, Served


def test_in_range() -> None:
    assert in_range(b"a", b"a", b"") and not in_range(b"ab", b"a", b"")
    assert in_range(b"ab", b"a", b"b") and not in_range(b"b", b"a", b"b")
    assert in_range(b"zzz", b"b", b"\0") and not in_range(b"a", b"b", b"\0")


def collecting(key: bytes, end: bytes = b"") -> tuple[Watcher, list[WatchEvent], list[int]]:
    got: list[WatchEvent] = []
    compacted: list[int] = []

    def sink(_w: Watcher, evs: list[WatchEvent], _as_of: int) -> bool:
        got.extend(evs)
        return True

    w = Watcher(
        key=key,
        range_end=end,
        sink=sink,
        on_compacted=lambda _w, rev: compacted.append(rev),
    )
    return w, got, compacted


def test_snapshot_restore_replays_missed_history(tmp_path: Path) -> None:
    leader = MvccStore(tmp_path / "leader.db")
    apply = Applier(leader)
    apply(pb.PutRequest(key=b"a", value=b"1"))  # rev 2
    follower = MvccStore(tmp_path / "follower.db")
    Applier(follower)(pb.PutRequest(key=b"a", value=b"1"))  # the follower saw rev 2
    hub = WatchHub(follower)
    w, got, compacted = collecting(b"a", b"b")
    assert hub.subscribe(w, 0) == 0
    apply(pb.PutRequest(key=b"a", value=b"2"))  # rev 3
    apply(pb.PutRequest(key=b"ab", value=b"x"))  # rev 4
    apply(pb.PutRequest(key=b"zz", value=b"x"))  # rev 5, outside the range
    follower.restore(leader.snapshot(), apply.index)
    assert [(e.revision, e.event.kv.key) for e in got] == [(3, b"a"), (4, b"ab")]
    assert w.next_rev == 6 and not compacted
    # a snapshot that compacted past what the watcher needs ends it with the compact rev
    apply(pb.PutRequest(key=b"a", value=b"3"))  # rev 6
    apply(pb.PutRequest(key=b"a", value=b"4"))  # rev 7
    apply(pb.CompactionRequest(revision=7))
    follower.restore(leader.snapshot(), apply.index)
    assert compacted == [7] and len(hub) == 0
    leader.close()
    follower.close()


async def test_slow_stream_parks_watchers_and_resumes_from_history(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_service, "MAX_QUEUED", 3)
    stream = watch_service._Stream(served.node)
    stream.create(pb.WatchCreateRequest(key=b"k", range_end=b"l"))
    for i in range(10):
        await served.kv.Put(pb.PutRequest(key=b"k%d" % i, value=b"v"))
    # created + 2 event responses fit; the watcher is parked instead of growing the queue
    assert stream.queue.qsize() == 3 and stream.parked and len(served.node.hub) == 0
    revs: list[int] = []
    while not stream.queue.empty():
        resp = stream.queue.get_nowait()
        assert resp is not None
        revs.extend(e.kv.mod_revision for e in resp.events)
        if stream.queue.empty() and stream.parked:
            stream.resume()
    assert revs == list(range(2, 12))  # every event once, in order, across the pause
    assert len(served.node.hub) == 1  # live again
    stream.close()
