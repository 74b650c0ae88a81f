"""Linearizability of single-key registers (read / write / compare-and-set).

The search is Wing & Gong's, with Lowe's memoization as in Porcupine: walk the history's
call/return events in time order, tentatively linearize a pending call whose effect the
register model allows, backtrack when a return is reached for an operation that could not
be linearized before it. A (set of linearized ops, register value) pair seen once is never
explored again. Keys are independent (a register history is linearizable iff each key's
is), so every key is searched on its own.

Operations with an ``unknown`` outcome return "at infinity": they may take effect at any
point after their invocation, or never. ``fail`` operations never happened and reads that
did not complete constrain nothing, so both are dropped.

Unknown operations are what make the search explode (a quorum loss leaves dozens, each
free to happen anywhere), so two exact reductions apply to them:

- A value no read returned and no cas expected can only ever be "some other value" to the
  model, so all such values are one value, ``UNOBSERVED``.
- Unknown operations that do the same thing (kind, expected and that value) are
  interchangeable once invoked: a linearization using a later-invoked one where an
  earlier one is still pending can swap them. So of such a class only the earliest pending
  one is tried at any point, and one that would not change the value is not tried at all
  (leaving it out is the same linearization).

The search is exponential in the worst case, so it is bounded: past ``max_states``
memoized configurations a key's verdict is ``unknown``, never a guess.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from plasmacloud.chaos.history import History, Op, Status, Verdict, worst

DEFAULT_MAX_STATES = 200_000
REGISTER_KINDS = ("read", "write", "cas")
UNOBSERVED = "\x00unobserved"  # no workload value holds a NUL


_SENTINEL_OP = Op(process=-1, kind="read", key="", invoke=0.0, complete=0.0, outcome="ok")


@dataclass(eq=False)
class _Node:
    """A call or return event in the doubly linked event list."""

    op_index: int
    is_call: bool
    op: Op
    at_infinity: bool = False  # the return of an op whose completion was never seen
    twins: tuple[object, ...] | None = None  # an unknown op's class of interchangeable ones
    match: _Node | None = None  # a call's return event
    prev: _Node | None = None
    next: _Node | None = None


@dataclass(frozen=True)
class KeyResult:
    """Verdict for one key, with the op the deepest partial linearization got stuck on."""

    key: str
    status: Status
    ops: int
    states: int
    stuck_on: Op | None = None
    linearized: list[Op] = field(default_factory=list)


def step(state: str | None, op: Op) -> tuple[bool, str | None]:
    """The register model: may ``op`` take effect in ``state``, and the state after it."""
    if op.kind == "read":
        return op.result == state, state
    if op.kind == "write":
        return True, op.value
    # cas: a completed failed compare saw another value; an applied one (ok with
    # succeeded, or unknown and chosen to have happened) saw the expected value.
    if op.outcome == "ok" and op.succeeded is False:
        return state != op.expected, state
    if state == op.expected:
        return True, op.value
    return False, state


def _relevant(op: Op) -> bool:
    if op.outcome == "fail":
        return False
    # an unfinished read has no effect on the register, so it cannot constrain anything
    return not (op.kind == "read" and op.outcome != "ok")


def _merge_unobserved(ops: list[Op]) -> list[Op]:
    """The ops with every value that nothing observes replaced by ``UNOBSERVED``."""
    observed = {op.result for op in ops if op.kind == "read"}
    observed |= {op.expected for op in ops if op.kind == "cas"}
    return [
        op
        if op.kind == "read" or op.value in observed
        else op.model_copy(update={"value": UNOBSERVED})
        for op in ops
    ]


def _twins(op: Op) -> tuple[object, ...] | None:
    if op.outcome == "ok" or op.kind == "read":
        return None
    return (op.kind, op.expected if op.kind == "cas" else None, op.value)


def _earlier_twin_pending(call: _Node) -> bool:
    node = call.prev
    while node is not None:
        if node.is_call and node.twins == call.twins:
            return True
        node = node.prev
    return False


def _event_list(ops: list[Op]) -> _Node:
    """Head sentinel of the call/return list in time order (calls first on equal times, so
    touching operations count as concurrent: the permissive reading)."""
    events: list[tuple[float, int, int, _Node]] = []
    for i, op in enumerate(ops):
        done = op.complete if op.outcome == "ok" and op.complete is not None else math.inf
        call = _Node(i, True, op, twins=_twins(op))
        ret = _Node(i, False, op, at_infinity=done == math.inf)
        call.match = ret
        events.append((op.invoke, 0, i, call))
        events.append((done, 1, i, ret))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Node(-1, False, _SENTINEL_OP)
    prev = head
    for *_, node in events:
        prev.next = node
        node.prev = prev
        prev = node
    return head


def _lift(call: _Node) -> None:
    for n in (call, call.match):
        assert n is not None and n.prev is not None
        n.prev.next = n.next
        if n.next is not None:
            n.next.prev = n.prev


def _unlift(call: _Node) -> None:
    for n in (call.match, call):
        assert n is not None and n.prev is not None
        n.prev.next = n
        if n.next is not None:
            n.next.prev = n


def check_key(
    key: str, ops: list[Op], initial: str | None = None, max_states: int = DEFAULT_MAX_STATES
) -> KeyResult:
    """Is this one key's history linearizable (ok / violation / unknown past the bound)?"""
    ops = [op for op in ops if _relevant(op)]
    if not ops:
        return KeyResult(key, "ok", 0, 0)
    head = _event_list(_merge_unobserved(ops))
    state = initial
    linearized = 0  # bitset of op indexes
    seen: set[tuple[int, str | None]] = set()
    stack: list[tuple[_Node, str | None]] = []
    deepest: list[Op] = []
    stuck: Op | None = None
    entry = head.next
    while entry is not None:
        if entry.is_call:
            ok, new_state = step(state, entry.op)
            if entry.twins is not None and ok:
                ok = new_state != state and not _earlier_twin_pending(entry)
            if ok:
                config = (linearized | (1 << entry.op_index), new_state)
                if config not in seen:
                    if len(seen) >= max_states:
                        return KeyResult(key, "unknown", len(ops), len(seen))
                    seen.add(config)
                    stack.append((entry, state))
                    linearized, state = config
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        elif entry.at_infinity:
            # the first return at infinity: every op that completed is linearized, the
            # remaining unknown ones simply never took effect
            return KeyResult(key, "ok", len(ops), len(seen))
        else:
            if len(stack) >= len(deepest):
                deepest = [ops[n.op_index] for n, _ in stack]  # as recorded
                stuck = ops[entry.op_index]
            if not stack:
                return KeyResult(key, "violation", len(ops), len(seen), stuck, deepest)
            call, state = stack.pop()
            linearized &= ~(1 << call.op_index)
            _unlift(call)
            entry = call.next
    return KeyResult(key, "ok", len(ops), len(seen))


def explain(result: KeyResult) -> str:
    """One line for a person: which op broke the key and what came before it."""
    if result.status == "unknown":
        return (
            f"key {result.key}: gave up after {result.states} states "
            f"({result.ops} ops); neither proven nor refuted"
        )
    stuck = result.stuck_on
    what = _describe(stuck) if stuck else "?"
    before = ", ".join(_describe(op) for op in result.linearized[-3:]) or "nothing"
    return (
        f"key {result.key}: no linearization; stuck on {what} "
        f"after {len(result.linearized)} ops (last: {before})"
    )


def _describe(op: Op) -> str:
    times = f"[{op.invoke:.3f}, {op.complete:.3f}]" if op.complete is not None else ""
    where = f" via {op.node}" if op.node else ""
    if op.kind == "read":
        body = f"read -> {op.result!r}"
    elif op.kind == "write":
        body = f"write {op.value!r}"
    else:
        body = f"cas {op.expected!r}->{op.value!r} = {op.succeeded}"
    return f"p{op.process} {body} {op.outcome}{times}{where}"


def check_registers(history: History, max_states: int = DEFAULT_MAX_STATES) -> Verdict:
    """Linearizability of every register key in ``history`` (keys start absent)."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.kind in REGISTER_KINDS:
            by_key[op.key].append(op)
    results = [check_key(k, ops, max_states=max_states) for k, ops in sorted(by_key.items())]
    return Verdict(
        property="linearizable registers",
        status=worst(r.status for r in results),
        checked=len(results),
        details=[explain(r) for r in results if r.status != "ok"],
    )
