"""The Raft entry encoding: runs stored by column, exact round trips, old formats, garbage."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasmacloud.flaredb.command import LOAD, Command
from plasmacloud.flaredb.models import RequestError, Run, Statement, group_runs

S = Statement
# Every value a request can carry, and what direct callers may pass (bytes, booleans);
# text includes lone surrogates ("\ud800" is valid JSON) and big integers SQLite refuses.
values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=6)
)
sqls = st.sampled_from(["INSERT INTO t VALUES (?)", "INSERT INTO t VALUES (?, ?)", "X", "é ✓"])


def positional(width: int) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(*[values] * width)


params = st.integers(0, 3).flatmap(positional) | st.dictionaries(
    st.text(min_size=1, max_size=4), values, max_size=3
)
# Runs of several statements with one column layout are what the columnar form is for;
# extra text makes whole columns of strings common.
uniform_run = st.tuples(sqls, st.integers(0, 3)).flatmap(
    lambda sql_width: st.lists(
        st.tuples(*[st.text(max_size=8) | values] * sql_width[1]), min_size=1, max_size=6
    ).map(lambda rows: Run(sql_width[0], tuple(rows)))
)
any_run = st.builds(lambda sql, ps: Run(sql, tuple(ps)), sqls, st.lists(params, max_size=5))


def same(a: Any, b: Any) -> bool:
    """Equality that also holds for NaN and tells -0.0 from 0.0 and True from 1."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and str(a) == str(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300)
@given(
    st.lists(uniform_run | any_run, max_size=5), st.booleans(), st.sampled_from(["execute", LOAD])
)
def test_entry_round_trip(runs: list[Run], transaction: bool, kind: str) -> None:
    cmd = Command.from_runs(runs, transaction, kind)
    back = Command.decode(cmd.encode())
    assert (back.transaction, back.seed, back.kind) == (transaction, cmd.seed, kind)
    assert [r.sql for r in back.runs] == [r.sql for r in runs]
    for got, want in zip(back.runs, runs, strict=True):
        assert same(got.params, want.params), (got, want)


def test_bulk_run_stores_its_sql_once_and_values_unescaped() -> None:
    ins = "INSERT INTO t(v, n) VALUES (?, ?)"
    rows = tuple((f'quote " and \\ and é {i}', i) for i in range(100))
    data = Command.from_runs([Run(ins, rows)]).encode()
    assert data.count(ins.encode()) == 1
    # String values are copied into the entry as UTF-8, not JSON-escaped.
    assert 'quote " and \\ and é 7'.encode() in data
    assert Command.decode(data).runs == (Run(ins, rows),)


def test_runs_are_consecutive_statements_with_one_sql_text() -> None:
    stmts = [S("A", (1,)), S("A", (2,)), S("B"), S("A", {"x": 1})]
    assert group_runs(stmts) == [Run("A", ((1,), (2,))), Run("B", ((),)), Run("A", ({"x": 1},))]
    cmd = Command.new(stmts)
    assert cmd.statements == tuple(stmts) and len(cmd) == 4
    assert Command.decode(cmd.encode()).statements == tuple(stmts)


def test_entries_of_earlier_versions_still_decode() -> None:
    ungrouped = (
        b'{"k":"execute","s":["CREATE TABLE t (v)",["INSERT INTO t VALUES (?)",true]],"seed":7}'
    )
    cmd = Command.decode(ungrouped)
    assert cmd.statements == (S("CREATE TABLE t (v)"), S("INSERT INTO t VALUES (?)", (1,)))
    assert (cmd.transaction, cmd.seed) == (False, 7)
    grouped = json.dumps(
        {
            "k": "load",
            "g": [["INSERT INTO t VALUES (?)", [["a"], ["b"]]], ["UPDATE t SET v=:v", [{"v": 1}]]],
            "seed": 9,
            "tx": True,
        }
    ).encode()
    cmd = Command.decode(grouped)
    assert cmd.runs == (
        Run("INSERT INTO t VALUES (?)", (("a",), ("b",))),
        Run("UPDATE t SET v=:v", ({"v": 1},)),
    )
    assert (cmd.transaction, cmd.seed, cmd.kind) == (True, 9, LOAD)


def test_every_truncation_and_corruption_is_a_clean_error() -> None:
    cmd = Command.from_runs(
        [Run("INSERT INTO t VALUES (?, ?)", (("ab", 1), ("cd", None))), Run("X", ({"a": "b"},))]
    )
    data = cmd.encode()
    for cut in range(len(data)):
        with pytest.raises(RequestError, match="malformed log entry"):
            Command.decode(data[:cut])
    # A string section whose lengths do not add up, and counts that do not match the runs.
    with pytest.raises(RequestError, match="do not add up"):
        Command.decode(data + b"x")
    head_len = int.from_bytes(data[4:8], "little")
    head = json.loads(data[8 : 8 + head_len])
    for runs in ([["X", 3, ["s"]]], [["X", 1, ["s"]]], [["X", -1, []]], [["X", 1, [[1, 2]]]]):
        bad = {**head, "g": runs}
        body = json.dumps(bad).encode()
        forged = data[:4] + len(body).to_bytes(4, "little") + body + data[8 + head_len :]
        with pytest.raises(RequestError, match="malformed log entry"):
            Command.decode(forged)


@given(st.binary(max_size=64))
def test_garbage_is_refused_or_decoded_never_a_crash(data: bytes) -> None:
    with contextlib.suppress(RequestError):
        assert isinstance(Command.decode(b"FDB\x02" + data), Command)
