"""Watch streams: in revision order, no duplicates, no gaps, every acknowledged write seen.

A logical watch stream (``watcher``) may span several gRPC streams: when its node dies the
client resumes from the revision after the last one it saw. Over the whole logical stream:

* revisions never go backwards (events of one revision, a txn's, share it);
* no (revision, key) is delivered twice;
* every revision of its span (``WatchSpan``: ``start``..``end``) is delivered at least
  once -- the stream watches the whole keyspace, and every revision is a modification;
* every acknowledged write whose revision lies in the span arrives, at that revision, with
  its key and value;
* two streams never disagree about what happened at a revision.
"""

from __future__ import annotations

from collections import defaultdict

from plasmacloud.chaos.history import History, Op, Status, Verdict, WatchEvent, WatchSpan

MAX_DETAILS_PER_STREAM = 5
WRITE_KINDS = ("write", "cas", "add")


def written_key(op: Op) -> str:
    """The store key a write touched: an add of element ``e`` to set ``S`` is key ``S/e``."""
    return f"{op.key}/{op.value}" if op.kind == "add" else op.key


def _acked_writes(history: History) -> dict[int, list[Op]]:
    by_rev: dict[int, list[Op]] = defaultdict(list)
    for op in history.ops:
        applied = op.kind != "cas" or op.succeeded is True
        if op.kind in WRITE_KINDS and op.outcome == "ok" and applied and op.revision is not None:
            by_rev[op.revision].append(op)
    return by_rev


def _ranges(revisions: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``3-5, 9`` (at most a few ranges)."""
    out: list[str] = []
    start = prev = revisions[0]
    for r in [*revisions[1:], None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        out.append(f"{start}-{prev}" if prev != start else str(start))
        if r is not None:
            start = prev = r
    return ", ".join(out[:MAX_DETAILS_PER_STREAM]) + (" ..." if len(out) > 5 else "")


def check_stream(
    watcher: int,
    events: list[WatchEvent],
    span: WatchSpan | None,
    acked: dict[int, list[Op]],
) -> list[str]:
    """Problems with one logical stream (empty: none), events in delivery order."""
    problems: list[str] = []
    seen: set[tuple[int, str]] = set()
    by_rev: dict[int, dict[str, str | None]] = defaultdict(dict)
    last = 0
    for ev in events:
        if ev.revision < last:
            problems.append(
                f"watch {watcher}: revision {ev.revision} (key {ev.key}) delivered after {last}"
            )
        if (ev.revision, ev.key) in seen:
            problems.append(f"watch {watcher}: revision {ev.revision} key {ev.key} delivered twice")
        seen.add((ev.revision, ev.key))
        by_rev[ev.revision][ev.key] = ev.value
        last = max(last, ev.revision)
    if span is None and events:
        span = WatchSpan(watcher=watcher, start=events[0].revision, end=last)
    if span is not None and span.end >= span.start:
        missing = [r for r in range(span.start, span.end + 1) if r not in by_rev]
        if missing:
            problems.append(f"watch {watcher}: revisions never delivered: {_ranges(missing)}")
        for rev in range(span.start, span.end + 1):
            for op in acked.get(rev, []):
                got, key = by_rev.get(rev, {}), written_key(op)
                if key not in got:
                    problems.append(
                        f"watch {watcher}: acknowledged write of {key}={op.value!r} at "
                        f"revision {rev} not delivered (revision {rev} carried "
                        f"{sorted(got.items()) or 'nothing'})"
                    )
                elif got[key] != op.value:
                    problems.append(
                        f"watch {watcher}: revision {rev} delivered {key}={got[key]!r}, "
                        f"but the acknowledged write put {op.value!r}"
                    )
    return problems[: MAX_DETAILS_PER_STREAM * 4]


def check_watches(history: History) -> Verdict:
    """Every watch stream of ``history``, and agreement between streams."""
    streams: dict[int, list[WatchEvent]] = defaultdict(list)
    for ev in history.events:
        streams[ev.watcher].append(ev)
    spans = {s.watcher: s for s in history.spans}
    acked = _acked_writes(history)
    details: list[str] = []
    for watcher in sorted(set(streams) | set(spans)):
        details.extend(check_stream(watcher, streams[watcher], spans.get(watcher), acked))
    # agreement: what one stream saw at a revision, every other stream saw too
    views: dict[int, dict[int, frozenset[tuple[str, str | None]]]] = defaultdict(dict)
    for watcher, events in streams.items():
        per_rev: dict[int, set[tuple[str, str | None]]] = defaultdict(set)
        for ev in events:
            per_rev[ev.revision].add((ev.key, ev.value))
        for rev, items in per_rev.items():
            views[rev][watcher] = frozenset(items)
    for rev in sorted(views):
        if len(set(views[rev].values())) > 1:
            details.append(f"watch streams disagree at revision {rev}: {views[rev]}")
    status: Status = "violation" if details else "ok"
    return Verdict(
        property="watch streams ordered, gapless, complete",
        status=status,
        checked=len(set(streams) | set(spans)),
        details=details,
    )
