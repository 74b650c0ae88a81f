"""Request parser and result models: the wire forms the server and client share."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plasmacloud.flaredb import models
from plasmacloud.flaredb.models import (
    ErrorResult,
    ExecuteResult,
    QueryResult,
    RequestError,
    Response,
    Run,
    Statement,
    WireForm,
    encode_request,
    group_runs,
    parse_request,
    parse_runs,
    result_from_json,
)

scalars = (
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
sql = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
statement = (
    sql.map(Statement)
    | st.builds(Statement, sql, st.lists(scalars, max_size=5).map(tuple))
    | st.builds(
        Statement, sql, st.dictionaries(st.text(min_size=1, max_size=8), scalars, max_size=4)
    )
)


@given(st.lists(statement, max_size=8))
def test_request_round_trip(stmts: list[Statement]) -> None:
    assert parse_request(encode_request(stmts)) == stmts


@settings(max_examples=150)
@given(
    st.recursive(
        scalars | st.booleans(),
        lambda x: st.lists(x, max_size=5) | st.dictionaries(st.text(max_size=5), x, max_size=3),
        max_leaves=15,
    )
)
def test_parser_accepts_or_rejects_cleanly(doc: Any) -> None:
    """Any JSON document either parses into statements or raises RequestError."""
    try:
        out = parse_request(json.dumps(doc))
    except RequestError as exc:
        assert str(exc)
    else:
        assert isinstance(doc, list) and len(out) == len(doc)
        assert all(isinstance(s, Statement) and s.sql.strip() for s in out)


def test_booleans_become_integers_and_errors_name_the_position() -> None:
    assert parse_request('[["SELECT ?, ?", true, false]]') == [Statement("SELECT ?, ?", (1, 0))]
    # True == 1 in Python, so check the types too: SQLite must get the integers.
    (stmt,) = parse_request('[["SELECT ?, ?, ?", true, false, 2]]')
    assert [type(v) for v in stmt.params] == [int, int, int]
    with pytest.raises(
        RequestError, match=r"statement 2: parameter 'a' has unsupported type object"
    ):
        parse_request('["SELECT 1", ["SELECT :a", {"a": {"b": 1}}]]')
    with pytest.raises(RequestError, match="not valid JSON"):
        parse_request(b"\xff")


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True).flatmap(
        lambda cols: st.tuples(
            st.just(cols),
            st.lists(
                st.sampled_from(["integer", "text", "blob", "real", ""]),
                min_size=len(cols),
                max_size=len(cols),
            ),
            st.lists(
                st.lists(scalars | st.binary(max_size=8), min_size=len(cols), max_size=len(cols)),
                max_size=4,
            ),
        )
    ),
    st.booleans(),
)
def test_query_result_round_trip(
    cols_types_rows: tuple[list[str], list[str], list[list[Any]]], assoc: bool
) -> None:
    cols, types, rows = cols_types_rows
    q = QueryResult(cols, types, rows)
    back = result_from_json(json.loads(json.dumps(q.to_json(WireForm(associative=assoc)))))
    assert isinstance(back, QueryResult)
    if rows or not assoc:  # an empty associative result has no column order to keep
        assert back.columns == q.columns
    for i, t in enumerate(q.types):
        for orig, got in zip(rows, back.values, strict=True):
            # A value whose type matches its column's comes back unchanged (blobs via
            # base64, whole floats as JSON integers, equal in Python); SQLite columns may
            # mix types, which rqlite's format cannot say.
            if (t == "blob") == isinstance(orig[i], bytes):
                assert got[i] == orig[i]


def test_execute_and_error_shapes() -> None:
    assert ExecuteResult(0, 0).to_json() == {}
    assert ExecuteResult(3, 1, 0.5).to_json() == {
        "last_insert_id": 3,
        "rows_affected": 1,
        "time": 0.5,
    }
    assert result_from_json({}) == ExecuteResult()
    assert result_from_json({"error": "boom"}) == ErrorResult("boom")
    resp = Response([ExecuteResult(1, 1), ErrorResult("x")], 0.1)
    assert Response.from_json(json.loads(json.dumps(resp.to_json()))) == resp
    with pytest.raises(RequestError, match="not a FlareDB response"):
        Response.from_json({"error": "nope"})


json_values = st.recursive(
    scalars | st.booleans(),
    lambda x: st.lists(x, max_size=3) | st.dictionaries(st.text(max_size=3), x, max_size=2),
    max_leaves=6,
)
# Mostly the bulk shape ([sql, scalar...] items, runs of one SQL text), with every way an
# item can leave it: booleans, named or nested parameters, blank or non-text SQL, bare
# strings, empty arrays.
bulk_item = st.tuples(
    st.sampled_from(["INSERT INTO t VALUES (?)", "INSERT INTO t VALUES (?)", "SELECT ?", " "]),
    st.lists(scalars, max_size=3),
).map(lambda t: [t[0], *t[1]])
odd_item = (
    st.tuples(st.sampled_from(["SELECT :a", "X"]), json_values).map(list)
    | st.lists(json_values, max_size=3)
    | st.sampled_from(["SELECT 1", "", []])
)
request_doc = st.lists(bulk_item, max_size=12) | st.lists(bulk_item | odd_item, max_size=8)


@settings(max_examples=400)
@given(request_doc | json_values)
def test_fast_parser_agrees_with_the_full_one(doc: Any) -> None:
    """parse_runs gives what parse_request then group_runs give: the same statements
    (types included: repr tells True from 1 and -0.0 from 0.0), or the same error."""
    body = json.dumps(doc)
    try:
        want = group_runs(parse_request(body))
    except RequestError as exc:
        with pytest.raises(RequestError) as got_exc:
            parse_runs(body)
        assert str(got_exc.value) == str(exc)
    else:
        assert repr(parse_runs(body)) == repr(want)


def test_the_bulk_shape_takes_the_fast_path() -> None:
    doc = [["INSERT INTO t VALUES (?, ?)", "a", 1]] * 3 + [["SELECT ?", None]]
    for maybe_hex in (False, True):
        assert models._fast_runs(doc, maybe_hex) == [
            Run("INSERT INTO t VALUES (?, ?)", (("a", 1),) * 3),
            Run("SELECT ?", ((None,),)),
        ]
    for other in ([["SELECT ?", True]], [["SELECT :a", {"a": 1}]], ["SELECT 1"], [[" "]]):
        assert models._fast_runs(other, False) is None
    # A string that is a BLOB needs converting: the full parser does it.
    assert models._fast_runs([["SELECT ?", " x'00' "]], True) is None


def test_blob_parameters_as_rqlite_reads_them() -> None:
    """rqlite 8 (http/request_parser.go makeParameter, db.ParseHex): a string x'..' with
    whole bytes of hex, spaces around it ignored, and an array of byte values are BLOBs;
    any other string is text."""
    body = json.dumps(
        [
            ["INSERT INTO t VALUES (?, ?, ?, ?)", "x'0aFF'", [0, 255], " X'' ", "x'0'"],
            ["INSERT INTO t VALUES (:a, :b)", {"a": "x'41'", "b": "x'41"}],
            ["INSERT INTO t VALUES (?)", "\u0078'42'"],
        ]
    )
    runs = parse_runs(body)
    assert [r.params for r in runs] == [
        ((b"\n\xff", b"\x00\xff", b"", "x'0'"),),
        ({"a": b"A", "b": "x'41"},),
        ((b"B",),),
    ]
    assert parse_request(body) == [s for r in runs for s in r.statements()]
    with pytest.raises(RequestError, match="array of byte values"):
        parse_runs(json.dumps([["SELECT ?", [256]]]))
    assert Statement("SELECT ?", (b"\x00A",)).to_json() == ["SELECT ?", "x'0041'"]


def test_a_number_too_long_to_convert_is_a_request_error() -> None:
    with pytest.raises(RequestError, match="not valid JSON"):
        parse_runs("[" + "9" * 5000 + "]")


results = st.lists(
    st.builds(
        ExecuteResult,
        st.integers(-(2**63), 2**63 - 1),
        st.integers(0, 2**31),
        st.none() | st.floats(0, 10),
    )
    | st.builds(ErrorResult, st.text(max_size=10), st.none() | st.floats(0, 10))
    | st.builds(
        QueryResult,
        st.just(["a"]),
        st.just(["text"]),
        st.lists(st.tuples(scalars).map(list), max_size=2),
    ),
    max_size=6,
)


forms = st.builds(
    WireForm, st.booleans(), st.booleans(), st.sampled_from(["execute", "query", "request"])
)


@given(results, st.none() | st.floats(0, 10), forms)
def test_response_dumps_is_compact_json_dumps(
    rs: list[Any], t: float | None, form: WireForm
) -> None:
    resp = Response(rs, t)
    assert resp.dumps(form) == json.dumps(resp.to_json(form), separators=(",", ":"))
