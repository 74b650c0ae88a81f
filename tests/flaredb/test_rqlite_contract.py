"""rqlite 8's HTTP API, as documented and as its code answers, held against FlareDB.

No rqlite binary runs here, so each test states the behaviour it checks and where it
is written down: "API doc" is https://rqlite.io/docs/api/api/ (rqlite/rqlite.io
content/en/docs/API/api/_index.md); "v8 code" names a file of rqlite v8.43.4 and the
test there that pins the same answer (db/db.go queryStmtWithConn, populateEmptyTypes,
normalizeRowParameters, isTextType; command/encoding/json.go; the go-sqlite3 driver's
SQLiteRows.Next for time and boolean columns).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from .conftest import LiveNode


async def post(url: str, body: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as r,
    ):
        text = await r.text()
        return r.status, json.loads(text)


async def execute(node: LiveNode, *stmts: Any, query: str = "") -> list[dict[str, Any]]:
    status, doc = await post(node.url + "/db/execute" + query, list(stmts))
    assert status == 200, doc
    return list(doc["results"])


async def select(node: LiveNode, sql: Any, query: str = "") -> dict[str, Any]:
    status, doc = await post(node.url + "/db/query" + query, [sql])
    assert status == 200, doc
    (result,) = doc["results"]
    return dict(result)


async def test_types_are_the_declared_types_lowercased(live_node: LiveNode) -> None:
    """API doc: "types contains the declared type of the columns, not the Storage
    Class". v8 code: strings.ToLower(DatabaseTypeName()); db_common_test expects "int",
    "numeric", "varchar(36)", "json", "nchar", "nvarchar", "clob", "foo"."""
    await execute(
        live_node,
        "CREATE TABLE t (a INT, b float, c NUMBER(5), d VARCHAR(36), e json, f NCHAR, "
        "g nvarchar, h CLOB, i foo, j UNSIGNED BIG INT, k DOUBLE PRECISION, l BLOB, m TEXT, "
        "n DATETIME, o INTEGER)",
        "INSERT INTO t VALUES (1, 1.5, 5, 'v', '{}', 'n', 'nv', 'c', 7, 8, 9.5, x'00', 't', "
        "NULL, 3)",
    )
    r = await select(live_node, "SELECT * FROM t")
    assert r["types"] == [
        "int",
        "float",
        "number(5)",
        "varchar(36)",
        "json",
        "nchar",
        "nvarchar",
        "clob",
        "foo",
        "unsigned big int",
        "double precision",
        "blob",
        "text",
        "datetime",
        "integer",
    ]
    empty = await select(live_node, "SELECT a, c FROM t WHERE 0")
    assert empty == {"columns": ["a", "c"], "types": ["int", "number(5)"]}  # no "values"


async def test_ddl_with_any_type_name_and_quoted_identifiers(live_node: LiveNode) -> None:
    """API doc: statements are passed to SQLite as written; any type name SQLite accepts
    is a declared type, reported as written (lowercased), whatever the quoting of the
    table and column names."""
    ddl = (
        'CREATE TABLE "odd ""t""" ([col one] "my type"(10, 2), `c 2` NATIVE CHARACTER(70), '
        "'c3' VARYING CHARACTER(255), c4 Timestamp WITH TIME ZONE, c5)"
    )
    results = await execute(
        live_node, ddl, 'INSERT INTO "odd ""t""" VALUES (1, 2, 3, 4, 5)', query="?transaction"
    )
    assert results == [{}, {"last_insert_id": 1, "rows_affected": 1}]
    info = await select(live_node, "PRAGMA table_info('odd \"t\"')")
    declared = [row[2].lower() for row in info["values"]]
    r = await select(live_node, 'SELECT * FROM "odd ""t"""')
    assert r["columns"] == ["col one", "c 2", "c3", "c4", "c5"]
    assert r["types"][:4] == declared[:4]
    assert r["types"][4] == "integer"  # no declared type: the first value's class
    assert r["values"] == [[1, "2", "3", 4, 5]]  # values take their columns' affinity


async def test_expressions_aliases_views_and_ctes(live_node: LiveNode) -> None:
    """v8 code: a column without a declared type (an expression) takes the type of its
    value in the first row (populateEmptyTypes: "integer", "real", "text", "blob"), ""
    if that value is NULL or there is no row; an alias or view column that is a plain
    column keeps the column's declared type (SQLite's decltype); db_common_test expects
    ["sum(age)"] "integer", ["avg(height)"] "real", ["id || \\"_bar\\""] "text"."""
    await execute(
        live_node,
        "CREATE TABLE p (id INTEGER PRIMARY KEY, age int, height REAL, name TEXT)",
        "INSERT INTO p VALUES (1, 20, 1.5, 'fiona'), (2, 40, NULL, NULL)",
        "CREATE VIEW pv AS SELECT age AS years, age + 1 AS next, name FROM p",
    )
    r = await select(
        live_node,
        "SELECT age AS a, sum(age), avg(height), id || '_bar', NULL, name FROM p "
        "GROUP BY id ORDER BY id DESC",
    )
    assert r["types"] == ["int", "integer", "", "text", "", "text"]  # first row: id 2
    assert r["values"] == [
        [40, 40, None, "2_bar", None, None],
        [20, 20, 1.5, "1_bar", None, "fiona"],
    ]
    r = await select(live_node, "SELECT * FROM pv ORDER BY years")
    assert r["types"] == ["int", "integer", "text"]
    r = await select(live_node, "WITH c AS (SELECT height FROM p) SELECT height FROM c")
    assert r["types"] == ["real"]
    r = await select(live_node, "SELECT 1 + 1, 2.5, 'x', x'01', NULL WHERE 0")
    assert r == {"columns": ["1 + 1", "2.5", "'x'", "x'01'", "NULL"], "types": [""] * 5}


async def test_pragma_and_sqlite_master_results(live_node: LiveNode) -> None:
    """v8 code: db_common_test Test_DB_NotNULLField expects PRAGMA table_info types
    ["integer","text","text","integer","","integer"] and the values as SQLite gives
    them; Test_DB_... for sqlite_master ["text","text","text","int","text"]. (The API
    doc's PRAGMA foreign_keys example shows types [""], written before v7.21.3 began
    filling untyped columns from the first row; v8 answers "integer".)"""
    await execute(live_node, "CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT)")
    r = await select(live_node, 'PRAGMA table_info("foo")')
    assert r == {
        "columns": ["cid", "name", "type", "notnull", "dflt_value", "pk"],
        "types": ["integer", "text", "text", "integer", "", "integer"],
        "values": [[0, "id", "INTEGER", 1, None, 1], [1, "name", "TEXT", 0, None, 0]],
    }
    r = await select(live_node, "SELECT * FROM sqlite_master WHERE name = 'foo'")
    assert r["types"] == ["text", "text", "text", "int", "text"]
    r = await select(live_node, "PRAGMA foreign_keys")
    assert r == {"columns": ["foreign_keys"], "types": ["integer"], "values": [[0]]}


async def test_time_and_boolean_columns(live_node: LiveNode) -> None:
    """v8 code (go-sqlite3 SQLiteRows.Next): in a column declared date, datetime or
    timestamp, text in go-sqlite3's layouts and integers (Unix seconds, milliseconds
    beyond 1e12) come back as RFC 3339 (db_common_test Test_DB_SQLiteTimeTypes), text
    in no layout as Go's zero time; in a column declared boolean, integers come back
    as true/false."""
    await execute(
        live_node,
        "CREATE TABLE foo (d DATE, ts TIMESTAMP, dt DATETIME, b BOOLEAN, n INTEGER)",
        "INSERT INTO foo VALUES ('2004-02-14', '2004-02-14 07:15:00', "
        "'2021-10-22 19:39:32.016087', 1, 1)",
        "INSERT INTO foo VALUES (1700000000, 1700000000123, '2021-10-22T19:39:32+02:00', 0, 0)",
        "INSERT INTO foo VALUES ('not a date', 2.5, NULL, NULL, NULL)",
    )
    r = await select(live_node, "SELECT d, ts, dt, b, n FROM foo ORDER BY rowid")
    assert r["types"] == ["date", "timestamp", "datetime", "boolean", "integer"]
    assert r["values"] == [
        ["2004-02-14T00:00:00Z", "2004-02-14T07:15:00Z", "2021-10-22T19:39:32.016087Z", True, 1],
        ["2023-11-14T22:13:20Z", "2023-11-14T22:13:20.123Z", "2021-10-22T19:39:32+02:00", False, 0],
        ["0001-01-01T00:00:00Z", 2.5, None, None, None],
    ]


async def test_blobs_nulls_and_whole_floats(live_node: LiveNode) -> None:
    """API doc "BLOB data": BLOBs come back base64-encoded, or as arrays of byte values
    with blob_array. v8 code (db_common_test Test_DB_BLOB, Test_DB_HexQuery): text in a
    BLOB column stays text; a BLOB in a column of text affinity per isTextType (text,
    varchar..., no declared type) comes back as text. NULL is JSON null. Floats are
    written by Go's encoder: a whole one without a fraction (sum(name) "real" [[0]])."""
    await execute(
        live_node,
        "CREATE TABLE foo (name TEXT, data BLOB, r REAL)",
        "INSERT INTO foo VALUES ('fiona', 'hello', 3.0)",
        "INSERT INTO foo VALUES ('declan', X'74657374', 2.5)",
        "INSERT INTO foo VALUES (x'53514c', NULL, NULL)",
    )
    r = await select(live_node, "SELECT * FROM foo")
    assert r == {
        "columns": ["name", "data", "r"],
        "types": ["text", "blob", "real"],
        "values": [["fiona", "hello", 3], ["declan", "dGVzdA==", 2.5], ["SQL", None, None]],
    }
    r = await select(live_node, "SELECT data FROM foo WHERE name = 'declan'", "?blob_array")
    assert r["values"] == [[[116, 101, 115, 116]]]
    r = await select(live_node, "SELECT x'53514C697465'")
    assert r == {"columns": ["x'53514C697465'"], "types": ["text"], "values": [["SQLite"]]}
    r = await select(live_node, "SELECT sum(name) FROM foo")
    assert r == {"columns": ["sum(name)"], "types": ["real"], "values": [[0]]}


async def test_associative_forms(live_node: LiveNode) -> None:
    """API doc "Associative response form" and "Unified Endpoint": /db/query answers
    {"types": {col: type}, "rows": [{col: value}]}; /db/request adds "rows": null to
    execute results and answers a failed statement {"error": ...}. v8 code
    (command/encoding/json.go AssociativeRows, ResultWithRows): "rows" is [] for no
    rows, and a failed /db/query statement still carries "rows": []."""
    await execute(
        live_node, "CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER)"
    )
    status, doc = await post(
        live_node.url + "/db/request?associative",
        [
            ["INSERT INTO foo(name, age) VALUES(?, ?)", "fiona", 20],
            ["INSERT INTO foo(name, age) VALUES(?, ?)", "declan", 30],
            ["SELECT * FROM foo"],
            ["SELECT * FROM bar"],
        ],
    )
    assert status == 200
    assert doc == {
        "results": [
            {"last_insert_id": 1, "rows_affected": 1, "rows": None},
            {"last_insert_id": 2, "rows_affected": 1, "rows": None},
            {
                "types": {"age": "integer", "id": "integer", "name": "text"},
                "rows": [
                    {"age": 20, "id": 1, "name": "fiona"},
                    {"age": 30, "id": 2, "name": "declan"},
                ],
            },
            {"error": "no such table: bar"},
        ]
    }
    assert await select(live_node, "SELECT name FROM foo WHERE 0", "?associative") == {
        "types": {"name": "text"},
        "rows": [],
    }
    assert await select(live_node, "SELECT * FROM bar", "?associative") == {
        "rows": [],
        "error": "no such table: bar",
    }
    # /db/execute has no associative form.
    assert await execute(live_node, "DELETE FROM foo WHERE id = 2", query="?associative") == [
        {"rows_affected": 1}
    ]


async def test_timings(live_node: LiveNode) -> None:
    """API doc: with timings each result and the response carry "time" (seconds);
    "If you do not want timings, do not pass timings as a URL parameter"."""
    status, doc = await post(live_node.url + "/db/execute?timings", ["CREATE TABLE t (x)"])
    assert status == 200 and doc["time"] > 0 and doc["results"][0]["time"] > 0
    status, doc = await post(live_node.url + "/db/query?timings", ["SELECT 1", "SELECT nope"])
    assert doc["time"] > 0 and all(r["time"] >= 0 for r in doc["results"])
    status, doc = await post(live_node.url + "/db/query", ["SELECT 1"])
    assert "time" not in doc and "time" not in doc["results"][0]


async def test_transaction_rolls_back_and_stops_at_the_error(live_node: LiveNode) -> None:
    """API doc "Transactions": "either both statements will succeed, or neither",
    "processing of the request ceases the moment any single query results in an
    error"; without transaction each statement stands alone ("Handling Errors": the
    error is in that statement's result, HTTP 200; the message is SQLite's, and this
    SQLite says "incomplete input" for the doc's own "INSERT INTO nonsense")."""
    await execute(live_node, "CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
    results = await execute(
        live_node,
        "INSERT INTO foo(name) VALUES('fiona')",
        "INSERT INTO foo(name) VALUES('fiona')",
        "INSERT INTO foo(name) VALUES('sinead')",
        query="?transaction",
    )
    assert results == [
        {"last_insert_id": 1, "rows_affected": 1},
        {"error": "UNIQUE constraint failed: foo.name"},
    ]
    assert "values" not in await select(live_node, "SELECT * FROM foo")
    results = await execute(
        live_node,
        "INSERT INTO foo(name) VALUES('fiona')",
        "nonsense",
        "INSERT INTO foo(name) VALUES('sinead')",
    )
    assert results == [
        {"last_insert_id": 1, "rows_affected": 1},
        {"error": 'near "nonsense": syntax error'},
        {"last_insert_id": 2, "rows_affected": 1},
    ]


async def test_unified_endpoint_mixes_reads_and_writes_in_order(live_node: LiveNode) -> None:
    """API doc "Unified Endpoint": reads and writes in one request, each answered in its
    own form and in order, a failed one with its error; it "supports transactions"."""
    await execute(live_node, "CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)")
    status, doc = await post(
        live_node.url + "/db/request",
        [
            ["INSERT INTO foo(name) VALUES(?)", "fiona"],
            "SELECT count(*) FROM foo",
            ["UPDATE foo SET name = :n WHERE id = 1", {"n": "FIONA"}],
            "SELECT name FROM foo",
            "SELECT * FROM bar",
        ],
    )
    assert status == 200
    assert doc["results"] == [
        {"last_insert_id": 1, "rows_affected": 1},
        {"columns": ["count(*)"], "types": ["integer"], "values": [[1]]},
        {"rows_affected": 1},
        {"columns": ["name"], "types": ["text"], "values": [["FIONA"]]},
        {"error": "no such table: bar"},
    ]
    status, doc = await post(
        live_node.url + "/db/request?transaction",
        ["INSERT INTO foo(name) VALUES('x')", "SELECT count(*) FROM foo", "SELECT * FROM bar"],
    )
    assert [list(r) for r in doc["results"]] == [
        ["last_insert_id", "rows_affected"],
        ["columns", "types", "values"],
        ["error"],
    ]
    assert (await select(live_node, "SELECT count(*) FROM foo"))["values"] == [[1]]


async def test_blob_parameters(live_node: LiveNode) -> None:
    """API doc "BLOB data": "You can also insert BLOB data as a parameterized value. Both
    the "X" form and byte arrays are supported as values." v8 code: http/request_parser.go
    makeParameter (db.ParseHex; an array of numbers 0-255). Any other string is text."""
    results = await execute(
        live_node,
        "CREATE TABLE foo (data BLOB) STRICT",
        ["INSERT INTO foo (data) VALUES (?)", "x'68656C6C6F20776F726C64'"],
        ["INSERT INTO foo(data) VALUES(?)", [83, 81, 76, 105, 116, 101]],
        ["INSERT INTO foo(data) VALUES(:d)", {"d": "aGk="}],
    )
    assert results[1:3] == [
        {"last_insert_id": 1, "rows_affected": 1},
        {"last_insert_id": 2, "rows_affected": 1},
    ]
    assert results[3] == {"error": "cannot store TEXT value in BLOB column foo.data"}
    r = await select(live_node, "SELECT data, typeof(data) FROM foo")
    assert r["values"] == [["aGVsbG8gd29ybGQ=", "blob"], ["U1FMaXRl", "blob"]]


async def test_a_write_sent_as_a_query_fails_alone(live_node: LiveNode) -> None:
    """API doc: /db/query "accepts only read requests"; v8 code (db.go queryWithConn):
    a statement that is not read-only answers "attempt to change database via query
    operation", and the others of the request are answered."""
    await execute(live_node, "CREATE TABLE foo (x)")
    status, doc = await post(
        live_node.url + "/db/query", ["INSERT INTO foo VALUES (1)", "SELECT count(*) FROM foo"]
    )
    assert status == 200
    assert doc["results"] == [
        {"error": "attempt to change database via query operation"},
        {"columns": ["count(*)"], "types": ["integer"], "values": [[0]]},
    ]
