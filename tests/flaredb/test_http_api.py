"""The rqlite-shaped HTTP API on one in-process node: wire shapes, options, bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import LiveNode


async def call(
    method: str, url: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    async with aiohttp.ClientSession() as s, s.request(method, url, data=data) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def test_rqlite_wire_shapes(live_node: LiveNode) -> None:
    u = live_node.url
    status, doc = await call(
        "POST",
        u + "/db/execute",
        [
            "CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER)",
            ["INSERT INTO foo(name, age) VALUES(?, ?)", "fiona", 20],
        ],
    )
    assert status == 200
    assert doc == {"results": [{}, {"last_insert_id": 1, "rows_affected": 1}]}

    status, doc = await call("GET", u + "/db/query?q=SELECT+*+FROM+foo&level=strong")
    assert status == 200
    assert doc == {
        "results": [
            {
                "columns": ["id", "name", "age"],
                "types": ["integer", "text", "integer"],
                "values": [[1, "fiona", 20]],
            }
        ]
    }
    status, doc = await call("POST", u + "/db/query?associative&timings", ["SELECT name FROM foo"])
    assert status == 200
    assert doc["results"][0]["rows"] == [{"name": "fiona"}]
    assert doc["results"][0]["types"] == {"name": "text"}
    assert doc["time"] >= 0 and doc["results"][0]["time"] >= 0

    status, doc = await call("POST", u + "/db/query?q=SELECT+count(*)+FROM+foo")
    assert status == 200 and doc["results"][0]["values"] == [[1]]

    async with aiohttp.ClientSession() as s, s.get(u + "/db/query?q=SELECT+1&pretty") as resp:
        assert "\n    " in await resp.text()


async def test_status_nodes_readyz_metrics(live_node: LiveNode) -> None:
    u = live_node.url
    await call("POST", u + "/db/execute", ["CREATE TABLE m (x)", "INSERT INTO m VALUES (1)", "BAD"])
    status, doc = await call("GET", u + "/status")
    assert status == 200 and doc["store"]["leader"]["node_id"] == "node01"
    assert doc["store"]["db_applied_index"] == 1
    status, doc = await call("GET", u + "/nodes")
    assert doc == {
        "node01": {
            "id": "node01",
            "api_addr": u,
            "addr": "127.0.0.1:1",
            "reachable": True,
            "leader": True,
            "voter": True,
        }
    }
    status, doc = await call("GET", u + "/nodes?ver=2")
    assert [n["id"] for n in doc["nodes"]] == ["node01"]
    status, text = await call("GET", u + "/readyz")
    assert status == 200 and "[+]leader ok" in text
    status, text = await call("GET", u + "/metrics")
    assert status == 200
    assert 'flaredb_statements_total{kind="execute",outcome="ok"} 2.0' in text
    assert 'flaredb_statements_total{kind="execute",outcome="error"} 1.0' in text
    assert "flaredb_applied_statements_total 3.0" in text
    assert 'flaredb_http_request_seconds_count{endpoint="execute"} 1.0' in text
    size = next(ln for ln in text.splitlines() if ln.startswith("flaredb_db_size_bytes"))
    assert float(size.split()[1]) > 0


async def test_bad_input_answers_clear_errors(live_node: LiveNode) -> None:
    u = live_node.url
    cases: list[tuple[str, str, Any, bytes | None, int, str]] = [
        ("POST", "/db/execute", None, b"[not json", 400, "not valid JSON"),
        ("POST", "/db/execute", {"sql": "x"}, None, 400, "must be a JSON array"),
        ("POST", "/db/execute", [42], None, 400, "statement 1: expected a string"),
        ("POST", "/db/execute", [["SELECT ?", {"a": ["x"]}]], None, 400, "unsupported type array"),
        ("POST", "/db/execute", [["SELECT ?", [256]]], None, 400, "parameter 1 has unsupported"),
        ("POST", "/db/execute", [[1, 2]], None, 400, "first item must be the SQL"),
        ("POST", "/db/execute", [""], None, 400, "empty SQL"),
        (
            "POST",
            "/db/execute",
            ["INSERT INTO t VALUES(last_insert_rowid())"],
            None,
            400,
            "last_insert_rowid",
        ),
        (
            "POST",
            "/db/execute",
            ["CREATE TABLE t (ts DEFAULT CURRENT_TIMESTAMP)"],
            None,
            400,
            "current time",
        ),
        ("POST", "/db/execute", ["ATTACH 'x.db' AS x"], None, 400, "ATTACH"),
        ("POST", "/db/execute?timeout=soon", ["SELECT 1"], None, 400, "invalid duration"),
        ("GET", "/db/query", None, None, 400, "q parameter"),
        ("POST", "/db/execute", None, b"", 400, "needs a JSON array"),
        ("POST", "/db/query?level=strong", ["DELETE FROM t"], None, 400, "reads only"),
        ("GET", "/db/execute", None, None, 405, "not allowed"),
        ("DELETE", "/db/query", None, None, 405, "not allowed"),
        ("GET", "/nope", None, None, 404, "no such endpoint GET /nope"),
        (
            "POST",
            "/db/execute",
            None,
            b"[" + b'"SELECT 1",' * 200_000 + b'"SELECT 1"]',
            413,
            "exceeded",
        ),
    ]
    for method, path, body, raw, want, fragment in cases:
        status, doc = await call(method, u + path, body, raw)
        assert (status, fragment in doc.get("error", "")) == (want, True), (path, body, doc)
    # Still serving after all that.
    status, doc = await call("POST", u + "/db/query", ["SELECT 1 AS one"])
    assert status == 200 and doc["results"][0]["values"] == [[1]]


async def test_nondeterministic_sql_is_rewritten_once(live_node: LiveNode) -> None:
    u = live_node.url
    status, doc = await call(
        "POST",
        u + "/db/execute",
        [
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b, c, r, rb)",
            "INSERT INTO t(a, b, c, r, rb) VALUES (CURRENT_TIMESTAMP, datetime('now'), "
            "strftime('%s','now'), random(), randomblob(8))",
        ],
    )
    assert status == 200 and "error" not in doc["results"][1], doc
    status, doc = await call("GET", u + "/db/query?q=SELECT+a,b,c,typeof(r),length(rb)+FROM+t")
    a, b, c, r_type, rb_len = doc["results"][0]["values"][0]
    assert b.startswith(a) and len(b) == len("2026-01-01 00:00:00")
    assert int(c) > 1_700_000_000 and r_type == "integer" and rb_len == 8


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
sqlish = st.sampled_from(
    [
        "SELECT 1",
        "SELECT ?",
        "SELECT :a",
        "INSERT INTO f VALUES(?)",
        "CREATE TABLE f(x)",
        "SELECT * FROM f",
        "DROP TABLE f",
        "'",
        "SELECT random()",
        "UPDATE f SET x = :a",
    ]
) | st.text(max_size=30)
statements = st.lists(
    sqlish
    | st.tuples(sqlish).map(list)
    | st.lists(json_values, max_size=3).flatmap(lambda ps: sqlish.map(lambda s: [s, *ps])),
    max_size=5,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=statements | json_values,
    path=st.sampled_from(["/db/execute", "/db/query", "/db/request"]),
    params=st.dictionaries(
        st.sampled_from(
            ["transaction", "level", "timeout", "freshness", "associative", "pretty", "timings"]
        ),
        st.sampled_from(["", "strong", "none", "weak", "linearizable", "1s", "0", "x", "-1"]),
        max_size=3,
    ),
)
async def test_fuzzed_requests_never_crash(
    live_node: LiveNode, body: Any, path: str, params: dict[str, str]
) -> None:
    """Random bodies and options: always JSON back, 200 with a result per statement or a
    clear 400."""
    query = "&".join(f"{k}={v}" if v else k for k, v in params.items())
    status, doc = await call("POST", f"{live_node.url}{path}?{query}", body)
    assert isinstance(doc, dict), doc
    if status == 200:
        assert isinstance(doc["results"], list)
        assert len(doc["results"]) <= len(body)
        for r in doc["results"]:
            assert set(r) <= {
                "columns",
                "types",
                "values",
                "rows",
                "last_insert_id",
                "rows_affected",
                "error",
                "time",
            }
    else:
        assert status == 400 and isinstance(doc["error"], str) and doc["error"], doc


async def test_entry_over_the_replication_limit_is_refused(live_node: LiveNode) -> None:
    live_node.api.max_entry = 2000
    u = live_node.url
    body = ["CREATE TABLE big (v TEXT)"] + [["INSERT INTO big VALUES (?)", "x" * 100]] * 30
    status, doc = await call("POST", u + "/db/execute", body)
    assert status == 413 and "split them into several requests" in doc["error"]
    status, doc = await call(
        "GET", u + "/db/query?q=SELECT+name+FROM+sqlite_master+WHERE+name='big'"
    )
    assert status == 200 and "values" not in doc["results"][0]  # nothing was applied
    status, doc = await call("POST", u + "/db/execute", body[:5])
    assert status == 200 and len(doc["results"]) == 5


async def test_runaway_query_is_interrupted_and_the_node_keeps_serving(live_node: LiveNode) -> None:
    u = live_node.url
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )

    query = asyncio.create_task(call("POST", u + "/db/query?timeout=5s&level=none", [endless]))
    await asyncio.sleep(0.1)  # let the query start
    status, _ = await call("GET", u + "/readyz")
    # The loop answered while the query was still running in the reader thread.
    assert status == 200 and not query.done()
    status, doc = await query
    assert status == 200 and doc["results"][0]["error"] == "interrupted"
    status, doc = await call("POST", u + "/db/query", ["SELECT 2"])
    assert doc["results"][0]["values"] == [[2]]


async def test_linearizable_read_after_a_client_begin_sees_later_writes(
    live_node: LiveNode,
) -> None:
    u = live_node.url
    await call("POST", u + "/db/execute", ["CREATE TABLE t (x)", "INSERT INTO t VALUES (1)"])
    status, _ = await call("POST", u + "/db/query?level=none", ["BEGIN", "SELECT * FROM t"])
    assert status == 200
    status, doc = await call("POST", u + "/db/execute", ["INSERT INTO t VALUES (2)"])
    assert doc["results"] == [{"last_insert_id": 2, "rows_affected": 1}]
    status, doc = await call("GET", u + "/db/query?q=SELECT+count(*)+FROM+t&level=linearizable")
    assert status == 200 and doc["results"][0]["values"] == [[2]], doc


async def test_a_forwarded_weak_read_waits_for_what_the_follower_applied(
    live_node: LiveNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower forwards a weak read with its applied index; a leader behind it (its
    fsync pending) passes a read barrier first, so the client sees the write the follower
    acknowledged. A leader that is not behind reads at once."""
    barriers = []

    async def read_index(timeout: float = 5.0) -> int:
        barriers.append(timeout)
        return 0

    monkeypatch.setattr(live_node.api.raft, "read_index", read_index)
    applied = live_node.store.applied_index()
    q = live_node.url + "/db/query?q=SELECT+1&level=weak"
    for header, want in ((str(applied), 0), (str(applied + 5), 1), ("junk", 1)):
        async with (
            aiohttp.ClientSession() as s,
            s.get(q, headers={"X-FlareDB-Forwarded": header}) as resp,
        ):
            assert resp.status == 200 and (await resp.json())["results"][0]["values"] == [[1]]
        assert len(barriers) == want
