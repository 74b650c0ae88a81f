"""History checkers: known-good histories pass, each planted anomaly is flagged."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from plasmacloud.chaos.history import History, Op, WatchEvent, WatchSpan, load_history, save_history
from plasmacloud.chaos.history_check import check_history, passed
from plasmacloud.chaos.history_register import check_key, check_registers, step
from plasmacloud.chaos.history_set import check_sets
from plasmacloud.chaos.history_watch import check_watches


def w(
    p: int, v: str, t0: float, t1: float | None, outcome: str = "ok", rev: int | None = None
) -> Op:
    return Op.model_validate(
        {
            "process": p,
            "kind": "write",
            "key": "x",
            "value": v,
            "invoke": t0,
            "complete": t1,
            "outcome": outcome,
            "revision": rev,
        }
    )


def r(p: int, v: str | None, t0: float, t1: float | None, outcome: str = "ok") -> Op:
    fields = {"process": p, "kind": "read", "key": "x", "result": v, "outcome": outcome}
    return Op.model_validate({**fields, "invoke": t0, "complete": t1})


def cas(p: int, old: str | None, new: str, ok: bool | None, t0: float, t1: float | None) -> Op:
    fields = {"process": p, "kind": "cas", "key": "x", "expected": old, "value": new}
    outcome = "unknown" if t1 is None else "ok"
    return Op.model_validate(
        {**fields, "succeeded": ok, "invoke": t0, "complete": t1, "outcome": outcome}
    )


# -- registers --------------------------------------------------------------------------


def test_sequential_history_is_linearizable() -> None:
    ops = [r(0, None, 0, 1), w(0, "a", 2, 3), r(1, "a", 4, 5), cas(0, "a", "b", True, 6, 7)]
    ops.append(r(1, "b", 8, 9))
    assert check_key("x", ops).status == "ok"


def test_concurrent_reads_may_see_either_side_of_an_overlapping_write() -> None:
    ops = [w(0, "a", 0, 1), w(1, "b", 2, 10), r(2, "a", 3, 4), r(3, "b", 5, 6)]
    assert check_key("x", ops).status == "ok"


def test_stale_read_is_flagged() -> None:
    # b is acknowledged at t=3; a read that starts later still sees a
    ops = [w(0, "a", 0, 1), w(1, "b", 2, 3), r(2, "a", 4, 5)]
    result = check_key("x", ops)
    assert result.status == "violation"
    assert result.stuck_on is not None and result.stuck_on.kind == "read"


def test_lost_write_is_flagged() -> None:
    # an acknowledged write that a later read does not see: the key reads as never written
    ops = [w(0, "a", 0, 1), r(1, None, 2, 3)]
    assert check_key("x", ops).status == "violation"


def test_read_of_a_value_never_written_is_flagged() -> None:
    assert check_key("x", [w(0, "a", 0, 1), r(1, "zzz", 2, 3)]).status == "violation"


def test_unknown_write_may_or_may_not_take_effect() -> None:
    took = [w(0, "a", 0, None, "unknown"), r(1, "a", 5, 6)]
    skipped = [w(0, "a", 0, None, "unknown"), r(1, None, 5, 6)]
    assert check_key("x", took).status == "ok"
    assert check_key("x", skipped).status == "ok"
    # ...but not before it was invoked
    early = [r(1, "a", 0, 1), w(0, "a", 2, None, "unknown")]
    assert check_key("x", early).status == "violation"


def test_unknown_write_cannot_flicker() -> None:
    # once a read saw it, a later read cannot see the value from before it again
    ops = [w(0, "a", 0, 1), w(1, "b", 2, None, "unknown"), r(2, "b", 3, 4), r(2, "a", 5, 6)]
    assert check_key("x", ops).status == "violation"


def test_failed_ops_and_unfinished_reads_are_ignored() -> None:
    ops = [w(0, "a", 0, 1), w(1, "b", 2, 3, "fail"), r(2, "zzz", 4, None, "unknown")]
    ops.append(r(3, "a", 5, 6))
    assert check_key("x", ops).status == "ok"


def test_cas_semantics() -> None:
    good = [w(0, "a", 0, 1), cas(1, "a", "b", True, 2, 3), cas(2, "a", "c", False, 4, 5)]
    assert check_key("x", [*good, r(0, "b", 6, 7)]).status == "ok"
    # a cas that claims success although the value it compared against was gone
    bad = [w(0, "a", 0, 1), w(0, "b", 2, 3), cas(1, "a", "c", True, 4, 5)]
    assert check_key("x", bad).status == "violation"
    # a failed compare although the value was exactly the expected one
    wrong_fail = [w(0, "a", 0, 1), cas(1, "a", "c", False, 2, 3)]
    assert check_key("x", wrong_fail).status == "violation"
    # an unknown cas applies only if the compare would have held
    maybe = [w(0, "a", 0, 1), cas(1, "a", "c", None, 2, None), r(2, "c", 5, 6)]
    assert check_key("x", maybe).status == "ok"


def test_search_is_bounded_and_says_unknown() -> None:
    # concurrent unknown writes, each value read by one of as many concurrent reads, and a
    # contradiction at the end: every order is a candidate, and a tiny bound must give up
    # rather than guess
    ops = [w(i, f"v{i}", 0, None, "unknown") for i in range(7)]
    ops += [r(100 + i, f"v{i}", 1, 2) for i in range(7)]
    ops += [r(200, "nope", 3, 4)]
    assert check_key("x", ops, max_states=50).status == "unknown"
    assert check_key("x", ops).status == "violation"


def test_a_quorum_loss_of_unknown_writes_nobody_read_is_searched_in_few_states() -> None:
    # the shape a lost quorum leaves: forty writes and cas that timed out, one read of one
    # of them after recovery; the thirty-nine values nobody saw are one class of twins
    ops = [w(0, "a", 0, 1)]
    ops += [w(i, f"v{i}", 2 + i / 100, None, "unknown") for i in range(1, 21)]
    ops += [cas(i, "a", f"c{i}", None, 2 + i / 100, None) for i in range(21, 41)]
    ops += [r(50, "v7", 10, 11)]
    result = check_key("x", ops)
    assert result.status == "ok" and result.states < 200
    ops.append(r(51, "a", 12, 13))  # the register cannot go back
    result = check_key("x", ops)
    assert result.status == "violation" and result.states < 2000


def test_keys_are_checked_independently() -> None:
    ops = [w(0, "a", 0, 1), w(1, "b", 0, 1).model_copy(update={"key": "y"}), r(2, "a", 2, 3)]
    ops.append(r(2, "b", 2, 3).model_copy(update={"key": "y"}))
    verdict = check_registers(History(ops=ops))
    assert verdict.status == "ok" and verdict.checked == 2
    ops.append(r(3, "a", 4, 5).model_copy(update={"key": "y"}))
    verdict = check_registers(History(ops=ops))
    assert verdict.status == "violation"
    assert verdict.details and verdict.details[0].startswith("key y:")


@st.composite
def sequential_executions(draw: st.DrawFn) -> list[Op]:
    """A register run sequentially, each op given a random window around its instant;
    some writes become unknown (applied or not), so the history is linearizable."""
    n = draw(st.integers(1, 25))
    state: str | None = None
    ops: list[Op] = []
    for i in range(n):
        at = float(i * 10)
        before = draw(st.floats(0, 25))
        after = draw(st.floats(0, 25))
        kind = draw(st.sampled_from(["read", "write", "cas", "lost-unknown", "unknown-write"]))
        proc = i
        if kind == "read":
            ops.append(r(proc, state, at - before, at + after))
        elif kind == "write":
            state = f"v{i}"
            ops.append(w(proc, state, at - before, at + after))
        elif kind == "unknown-write":
            state = f"v{i}"
            ops.append(w(proc, state, at - before, None, "unknown"))
        elif kind == "lost-unknown":
            # invoked, never took effect, never acknowledged
            ops.append(w(proc, f"v{i}", at - before, None, "unknown"))
        else:
            expected = draw(st.sampled_from([state, f"v{max(i - 1, 0)}", None]))
            hit = expected == state
            if hit:
                state = f"c{i}"
            ops.append(cas(proc, expected, f"c{i}", hit, at - before, at + after))
    return ops


@settings(max_examples=150, deadline=None)
@given(sequential_executions())
def test_sequential_executions_with_overlap_are_linearizable(ops: list[Op]) -> None:
    assert check_key("x", ops).status == "ok"


@st.composite
def stale_reads(draw: st.DrawFn) -> list[Op]:
    """A register run with no overlapping operations (so exactly one order explains it),
    where one read is made to return a value other than the one it must have seen."""
    n = draw(st.integers(2, 20))
    state: str | None = None
    ops: list[Op] = []
    reads: list[int] = []
    for i in range(n):
        t0, t1 = i * 10.0, i * 10.0 + draw(st.floats(0.1, 9.0))
        if draw(st.booleans()):
            state = f"v{i}"
            ops.append(w(i, state, t0, t1))
        else:
            reads.append(len(ops))
            ops.append(r(i, state, t0, t1))
    if not reads:
        ops.append(r(n, state, n * 10.0, n * 10.0 + 1))
        reads.append(len(ops) - 1)
    victim = draw(st.sampled_from(reads))
    written = [None, *(op.value for op in ops if op.kind == "write")]
    wrong = draw(st.sampled_from([v for v in [*written, "never"] if v != ops[victim].result]))
    ops[victim] = ops[victim].model_copy(update={"result": wrong})
    return ops


@settings(max_examples=150, deadline=None)
@given(stale_reads())
def test_a_wrong_read_in_a_sequential_history_is_always_flagged(ops: list[Op]) -> None:
    assert check_key("x", ops).status == "violation"


def _linearizable_by_definition(ops: list[Op]) -> bool:
    """The definition, enumerated: every completed op and some of the unknown ones, in an
    order that keeps each op after those that returned before it was invoked, make a legal
    register run from an absent value."""
    ops = [
        op for op in ops if op.outcome != "fail" and not (op.kind == "read" and op.outcome != "ok")
    ]
    done = [op for op in ops if op.outcome == "ok"]
    maybe = [op for op in ops if op.outcome != "ok"]

    def ends(op: Op) -> float:
        return op.complete if op.outcome == "ok" and op.complete is not None else math.inf

    def legal(order: tuple[Op, ...]) -> bool:
        state: str | None = None
        for i, op in enumerate(order):
            if any(ends(later) < op.invoke for later in order[i + 1 :]):
                return False
            ok, state = step(state, op)
            if not ok:
                return False
        return True

    subsets = (c for k in range(len(maybe) + 1) for c in itertools.combinations(maybe, k))
    return any(legal(o) for c in subsets for o in itertools.permutations(done + list(c)))


@st.composite
def small_concurrent_histories(draw: st.DrawFn) -> list[Op]:
    """Up to six overlapping register ops on a few values (so values repeat), some unknown."""
    values = ["a", "b", "c"]
    ops: list[Op] = []
    for p in range(draw(st.integers(1, 6))):
        t0 = float(draw(st.integers(0, 8)))
        t1 = t0 + draw(st.integers(0, 4))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        unknown = kind != "read" and draw(st.booleans())
        end = None if unknown else t1
        if kind == "read":
            ops.append(r(p, draw(st.sampled_from([None, *values])), t0, t1))
        elif kind == "write":
            ops.append(w(p, draw(st.sampled_from(values)), t0, end, "unknown" if unknown else "ok"))
        else:
            old = draw(st.sampled_from([None, *values]))
            hit = None if unknown else draw(st.booleans())
            ops.append(cas(p, old, draw(st.sampled_from(values)), hit, t0, end))
    return ops


@settings(max_examples=300, deadline=None)
@given(small_concurrent_histories())
def test_the_search_agrees_with_the_definition(ops: list[Op]) -> None:
    # the memoized, reduced search against plain enumeration on histories small enough
    expected = "ok" if _linearizable_by_definition(ops) else "violation"
    assert check_key("x", ops).status == expected


# -- sets -------------------------------------------------------------------------------


def add(p: int, v: str, t0: float, t1: float | None, outcome: str = "ok") -> Op:
    fields = {"process": p, "kind": "add", "key": "s", "value": v, "outcome": outcome}
    return Op.model_validate({**fields, "invoke": t0, "complete": t1})


def read_set(p: int, elems: list[str], t0: float, t1: float) -> Op:
    fields = {"process": p, "kind": "read_set", "key": "s", "elements": elems, "outcome": "ok"}
    return Op.model_validate({**fields, "invoke": t0, "complete": t1})


def test_set_good_history_passes() -> None:
    ops = [add(0, "a", 0, 1), add(1, "b", 0, None, "unknown"), add(2, "c", 0, 1, "fail")]
    ops += [read_set(3, ["a"], 2, 3), read_set(3, ["a", "b"], 4, 5)]
    assert check_sets(History(ops=ops)).status == "ok"


def test_set_lost_acknowledged_add_is_flagged() -> None:
    ops = [add(0, "a", 0, 1), add(1, "b", 0, 1), read_set(3, ["a"], 2, 3)]
    verdict = check_sets(History(ops=ops))
    assert verdict.status == "violation"
    assert "misses 1 acknowledged add(s): b" in verdict.details[0]


def test_set_phantom_and_failed_elements_are_flagged() -> None:
    ops = [add(0, "a", 0, 1), add(1, "c", 0, 1, "fail"), read_set(3, ["a", "c", "x"], 2, 3)]
    verdict = check_sets(History(ops=ops))
    assert verdict.status == "violation"
    assert "never added: c, x" in verdict.details[0]


def test_set_add_acknowledged_after_the_last_read_is_unverified() -> None:
    ops = [read_set(3, [], 0, 1), add(0, "a", 2, 3)]
    assert check_sets(History(ops=ops)).status == "unknown"


# -- watches ----------------------------------------------------------------------------


def ev(watcher: int, rev: int, key: str = "x", value: str | None = "a") -> WatchEvent:
    return WatchEvent(watcher=watcher, revision=rev, key=key, value=value, received=float(rev))


def test_watch_good_stream_passes() -> None:
    ops = [w(0, "a", 0, 1, rev=2), w(0, "b", 2, 3, rev=3)]
    events = [ev(1, 2, value="a"), ev(1, 3, value="b"), ev(1, 4, "y"), ev(1, 4, "z")]
    history = History(ops=ops, events=events, spans=[WatchSpan(watcher=1, start=2, end=4)])
    assert check_watches(history).status == "ok"


def test_watch_duplicate_event_is_flagged() -> None:
    events = [ev(1, 2), ev(1, 3), ev(1, 3)]
    verdict = check_watches(History(events=events))
    assert verdict.status == "violation"
    assert any("delivered twice" in d for d in verdict.details)


def test_watch_reordered_event_is_flagged() -> None:
    events = [ev(1, 2), ev(1, 4), ev(1, 3)]
    verdict = check_watches(History(events=events))
    assert verdict.status == "violation"
    assert any("revision 3 (key x) delivered after 4" in d for d in verdict.details)


def test_watch_gap_is_flagged() -> None:
    spans = [WatchSpan(watcher=1, start=2, end=6)]
    verdict = check_watches(History(events=[ev(1, 2), ev(1, 3), ev(1, 6)], spans=spans))
    assert verdict.status == "violation"
    assert any("never delivered: 4-5" in d for d in verdict.details)


def test_watch_missing_acknowledged_write_is_flagged() -> None:
    # revision 3 was acknowledged for x=b but the stream carried another key there
    ops = [w(0, "b", 0, 1, rev=3)]
    verdict = check_watches(History(ops=ops, events=[ev(1, 2), ev(1, 3, key="q")]))
    assert verdict.status == "violation"
    assert any("x='b' at revision 3 not delivered" in d for d in verdict.details)
    wrong = check_watches(History(ops=ops, events=[ev(1, 2), ev(1, 3, value="c")]))
    assert any("but the acknowledged write put 'b'" in d for d in wrong.details)


def test_watch_streams_disagreeing_are_flagged() -> None:
    verdict = check_watches(History(events=[ev(1, 2, value="a"), ev(2, 2, value="b")]))
    assert verdict.status == "violation"
    assert any("disagree at revision 2" in d for d in verdict.details)


# -- the whole history ------------------------------------------------------------------


def test_history_round_trips_through_json_lines_and_rechecks(tmp_path: Path) -> None:
    history = History(
        meta={"seed": 7, "faults": ["kill"]},
        ops=[
            w(0, "a", 0, 1, rev=2),
            r(1, "a", 2, 3),
            add(0, "e1", 0, 1),
            read_set(1, ["e1"], 2, 3),
        ],
        events=[ev(1, 2)],
        spans=[WatchSpan(watcher=1, start=2, end=2)],
    )
    path = tmp_path / "h.jsonl"
    save_history(path, history)
    again = load_history(path)
    assert again == history
    assert passed(check_history(again))
    # plant a lost write in the saved file: the replay must flag it
    planted = again.model_copy(update={"ops": [*again.ops, r(2, None, 10, 11)]})
    save_history(path, planted)
    verdicts = check_history(load_history(path))
    assert not passed(verdicts)
    assert [v.status for v in verdicts] == ["violation", "ok", "ok"]


def test_load_history_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"record": "meta", "meta": {}}\n{"record": "op", "process": 1}\n')
    try:
        load_history(path)
    except ValueError as exc:
        assert "bad.jsonl:2" in str(exc)
    else:
        raise AssertionError("a malformed op line must be rejected")
