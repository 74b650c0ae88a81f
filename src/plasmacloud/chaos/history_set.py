"""Sets built by unique adds: no acknowledged add lost, nothing read that was never added.

Each ``add`` puts one unique element into the set named by its key; ``read_set`` returns
the whole set. For every completed read:

* every element must come from an add that was attempted and did not certainly fail
  (``ok`` or ``unknown``) -- anything else was read but never written;
* every add acknowledged before the read was invoked must be in it -- otherwise an
  acknowledged write was lost (or the read was stale, which a linearizable read is not).

Adds with an ``unknown`` outcome may or may not appear. An acknowledged add that no later
read covers cannot be verified, so it makes the verdict ``unknown`` rather than ``ok``.
"""

from __future__ import annotations

from collections import defaultdict

from plasmacloud.chaos.history import History, Op, Status, Verdict, worst

MAX_LISTED = 5


def _listed(items: set[str]) -> str:
    shown = sorted(items)[:MAX_LISTED]
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return ", ".join(shown) + more


def check_set(key: str, ops: list[Op]) -> tuple[Status, list[str]]:
    """Verdict and evidence for one set."""
    adds = [op for op in ops if op.kind == "add"]
    possible = {op.value for op in adds if op.outcome != "fail" and op.value is not None}
    # (completion time, element) of acknowledged adds, oldest first
    acked = sorted(
        (op.complete, op.value)
        for op in adds
        if op.outcome == "ok" and op.complete is not None and op.value is not None
    )
    reads = sorted(
        (op for op in ops if op.kind == "read_set" and op.outcome == "ok"), key=lambda r: r.invoke
    )
    details: list[str] = []
    statuses: list[Status] = []
    due: set[str] = set()  # acknowledged before the current read began (grows read by read)
    n_due = 0
    for read in reads:
        while n_due < len(acked) and acked[n_due][0] < read.invoke:
            due.add(acked[n_due][1])
            n_due += 1
        seen = set(read.elements or [])
        phantom = seen - possible
        if phantom:
            statuses.append("violation")
            details.append(
                f"set {key}: read at {read.invoke:.3f} (p{read.process}) saw "
                f"{len(phantom)} element(s) never added: {_listed(phantom)}"
            )
        lost = due - seen
        if lost:
            statuses.append("violation")
            details.append(
                f"set {key}: read at {read.invoke:.3f} (p{read.process}"
                f"{' via ' + read.node if read.node else ''}) misses {len(lost)} "
                f"acknowledged add(s): {_listed(lost)}"
            )
    last_read = reads[-1].invoke if reads else None
    unverified = {v for done, v in acked if last_read is None or done >= last_read}
    if unverified:
        statuses.append("unknown")
        details.append(
            f"set {key}: {len(unverified)} acknowledged add(s) never covered by a later read"
        )
    return worst(statuses), details


def check_sets(history: History) -> Verdict:
    """Every set in ``history``: no lost acknowledged add, no phantom element."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.kind in ("add", "read_set"):
            by_key[op.key].append(op)
    statuses: list[Status] = []
    details: list[str] = []
    for key, ops in sorted(by_key.items()):
        status, found = check_set(key, ops)
        statuses.append(status)
        details.extend(found)
    return Verdict(
        property="no lost or phantom set elements",
        status=worst(statuses),
        checked=len(by_key),
        details=details,
    )
