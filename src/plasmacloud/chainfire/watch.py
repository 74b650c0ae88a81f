"""Watch fan-out: committed changes from the local store to every watcher on this node.

Each node's watchers are fed by that node's own apply, so events arrive exactly once and
in revision order whichever node leads. A watcher remembers the next revision it needs;
catch-up from history and registration for live events happen under the store's lock,
so nothing is missed or repeated between the two.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

from plasmacloud.chainfire.mvcc import MvccStore, WatchEvent

HISTORY_CHUNK = 1000  # events per catch-up delivery, so one response never gets huge

# A sink gets events and the revision the delivery is as of (what etcd puts in the
# response header). It returns False when it cannot take more now (a slow client): the
# watcher is then parked at the first refused event, and its owner resubscribes it later
# from history.
Sink = Callable[["Watcher", list[WatchEvent], int], bool]


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's range membership: one key, ``[start, end)``, or ``>= start`` for end ``\\0``."""
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


@dataclass(eq=False)
class Watcher:
    """One subscription: a key range, filters, and where its events go."""

    key: bytes
    range_end: bytes
    sink: Sink
    no_put: bool = False
    no_delete: bool = False
    watch_id: int = 0
    next_rev: int = 0
    prev_kv: bool = False
    progress_notify: bool = False
    # told the compact revision when a snapshot skipped past history it never saw
    on_compacted: Callable[[Watcher, int], None] | None = None

    def select(self, events: list[WatchEvent]) -> list[WatchEvent]:
        """The events this watcher wants, at or after its next revision."""
        out = []
        for ev in events:
            if ev.revision < self.next_rev:
                continue
            if not in_range(ev.key, self.key, self.range_end):
                continue
            if self.no_put if ev.is_put else self.no_delete:
                continue
            out.append(ev)
        return out

    def deliver(self, wanted: list[WatchEvent], through_rev: int, as_of: int = 0) -> bool:
        """Hand selected events to the sink; False (and nothing consumed) if it refused.

        ``as_of``: the revision the delivery reports; 0 for that of its last event (a live
        change). History replayed is as of the store's revision then, as in etcd.
        """
        if wanted and not self.sink(self, wanted, as_of or wanted[-1].revision):
            self.next_rev = wanted[0].revision
            return False
        self.next_rev = max(self.next_rev, through_rev + 1)
        return True


class WatchHub:
    """All watchers of one node."""

    def __init__(self, store: MvccStore) -> None:
        self.store = store
        self._watchers: set[Watcher] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closers: set[Callable[[], None]] = set()
        store.add_listener(self._on_events)
        store.add_restore_listener(self._on_restore)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on this loop (the store may apply from another thread)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def __len__(self) -> int:
        return len(self._watchers)

    def _on_events(self, events: list[WatchEvent]) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._dispatch(events)
        else:
            loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[WatchEvent]) -> None:
        last = events[-1].revision
        for watcher in list(self._watchers):
            if not watcher.deliver(watcher.select(events), last):
                self._watchers.discard(watcher)

    def _on_restore(self) -> None:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._catch_up()
        else:
            loop.call_soon_threadsafe(self._catch_up)

    def _catch_up(self) -> None:
        """After a snapshot jumped the store ahead, replay what watchers missed from history.

        Watchers whose next revision was compacted away in the snapshot are ended with
        the compact revision, as etcd does for a watcher that falls behind compaction.
        """
        with self.store.lock:
            current = self.store.revision
            for w in list(self._watchers):
                if w.next_rev > current:
                    continue
                if w.next_rev < self.store.compact_revision:
                    self._watchers.discard(w)
                    if w.on_compacted is not None:
                        w.on_compacted(w, self.store.compact_revision)
                    continue
                missed = self.store.events_since(w.next_rev, w.key, w.range_end, current)
                if not self._replay(w, missed, current):
                    self._watchers.discard(w)

    def subscribe(self, watcher: Watcher, start_rev: int) -> int:
        """Start delivering to ``watcher`` from ``start_rev`` (0 = only future changes).

        Returns 0, or the compact revision if ``start_rev`` was compacted away (then the
        watcher is not registered, like etcd's compacted watch).
        """
        with self.store.lock:
            current = self.store.revision
            if start_rev and start_rev <= current:
                if start_rev < self.store.compact_revision:
                    return self.store.compact_revision
                history = self.store.events_since(
                    start_rev, watcher.key, watcher.range_end, current
                )
                watcher.next_rev = start_rev
                if not self._replay(watcher, history, current):
                    return 0  # parked by its sink: the owner resubscribes it later
            watcher.next_rev = max(start_rev, current + 1)
            self._watchers.add(watcher)
        return 0

    @staticmethod
    def _replay(watcher: Watcher, history: list[WatchEvent], through_rev: int) -> bool:
        for chunk in _chunks(watcher.select(history)):
            if not watcher.deliver(chunk, chunk[-1].revision, as_of=through_rev):
                return False
        watcher.next_rev = through_rev + 1
        return True

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Register a callback run when the hub shuts down (streams end themselves)."""
        self._closers.add(closer)

    def discard_on_close(self, closer: Callable[[], None]) -> None:
        self._closers.discard(closer)

    def close(self) -> None:
        """Drop every watcher and tell every stream to end."""
        self._watchers.clear()
        for closer in list(self._closers):
            closer()
        self._closers.clear()


def _chunks(events: list[WatchEvent]) -> list[list[WatchEvent]]:
    """Split history into deliveries of about HISTORY_CHUNK events, never inside a revision."""
    out: list[list[WatchEvent]] = []
    chunk: list[WatchEvent] = []
    for ev in events:
        if len(chunk) >= HISTORY_CHUNK and ev.revision != chunk[-1].revision:
            out.append(chunk)
            chunk = []
        chunk.append(ev)
    if chunk:
        out.append(chunk)
    return out
