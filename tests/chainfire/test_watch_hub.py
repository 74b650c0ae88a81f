"""WatchHub: ordering, filters, and catch-up after a snapshot replaces the store."""

from __future__ import annotations

from pathlib import Path

from plasmacloud.chainfire.mvcc import MvccStore, WatchEvent
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.watch import Watcher, WatchHub, in_range

from .conftest import Applier


def test_in_range() -> None:
    assert in_range(b"a", b"a", b"") and not in_range(b"ab", b"a", b"")
    assert in_range(b"ab", b"a", b"b") and not in_range(b"b", b"a", b"b")
    assert in_range(b"zzz", b"b", b"\0") and not in_range(b"a", b"b", b"\0")


def collecting(key: bytes, end: bytes = b"") -> tuple[Watcher, list[WatchEvent], list[int]]:
    got: list[WatchEvent] = []
    compacted: list[int] = []
    w = Watcher(
        key=key,
        range_end=end,
        sink=lambda _w, evs: got.extend(evs),
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
