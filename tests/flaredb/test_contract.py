"""Contract: the client (shared models) against a live server, every statement kind and
every error the API can answer. A field renamed on either side fails here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from plasmacloud.flaredb import client as fc
from plasmacloud.flaredb.models import ErrorResult, ExecuteResult, QueryResult, Statement
from plasmacloud.raft.api import (
    NoLeaderError,
    NotLeaderError,
    ProposalDroppedError,
    ProposalTimeoutError,
)

from .conftest import LiveNode


async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The client is synchronous; run it off the loop that serves the node."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_every_statement_kind_round_trips(live_node: LiveNode) -> None:
    c = fc.Client(live_node.url)
    res = await run(
        c.execute,
        [
            Statement(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n REAL, b BLOB)"
            ),
            Statement("INSERT INTO t(name, n, b) VALUES(?, ?, ?)", ("fiona", 1.5, None)),
            Statement("INSERT INTO t(name, n) VALUES(:name, :n)", {"name": "declan", "n": 2}),
            Statement("INSERT INTO t(name, b) VALUES('blobby', x'00ff10')"),
            Statement("UPDATE t SET n = n + 1 WHERE n IS NOT NULL"),
            Statement("INSERT INTO t(name) VALUES('ret') RETURNING id, name"),
        ],
        timings=True,
    )
    assert res[0] == ExecuteResult(0, 0, res[0].time)
    assert isinstance(res[1], ExecuteResult) and (res[1].last_insert_id, res[1].rows_affected) == (
        1,
        1,
    )
    assert isinstance(res[2], ExecuteResult) and res[2].last_insert_id == 2
    assert isinstance(res[4], ExecuteResult) and res[4].rows_affected == 2
    assert isinstance(res[5], QueryResult) and res[5].values == [[4, "ret"]]
    assert all(r.time is not None and r.time >= 0 for r in res)

    for level in ("none", "weak", "linearizable", "strong", "auto"):
        (q,) = await run(c.query, [Statement("SELECT id, name, n, b FROM t ORDER BY id")], level)
        assert isinstance(q, QueryResult)
        assert q.columns == ["id", "name", "n", "b"]
        assert q.types == ["integer", "text", "real", "blob"]
        assert q.values == [
            [1, "fiona", 2.5, None],
            [2, "declan", 3, None],
            [3, "blobby", None, b"\x00\xff\x10"],
            [4, "ret", None, None],
        ]
        assert q.time is None  # no ?timings

    (assoc,) = await run(
        c.query, [Statement("SELECT id, name FROM t WHERE id=?", (1,))], "weak", True
    )
    assert isinstance(assoc, QueryResult) and assoc.values == [[1, "fiona"]]
    assert assoc.columns == ["id", "name"]

    (empty,) = await run(c.query, [Statement("SELECT * FROM t WHERE id < 0")])
    assert isinstance(empty, QueryResult) and empty.values == [] and len(empty.columns) == 4

    mixed = await run(
        c.request,
        [Statement("INSERT INTO t(name) VALUES('mixed')"), Statement("SELECT count(*) FROM t")],
    )
    assert isinstance(mixed[0], ExecuteResult) and mixed[0].rows_affected == 1
    assert isinstance(mixed[1], QueryResult) and mixed[1].values == [[5]]


async def test_statement_errors_are_results(live_node: LiveNode) -> None:
    c = fc.Client(live_node.url)
    await run(c.execute, [Statement("CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")])
    res = await run(
        c.execute,
        [
            Statement("INSERT INTO u(v) VALUES('a')"),
            Statement("INSERT INTO u(v) VALUES('a')"),
            Statement("SELEC nonsense"),
            Statement("INSERT INTO missing VALUES(1)"),
            Statement("INSERT INTO u(v) VALUES(?)", ("b",)),
        ],
    )
    assert isinstance(res[0], ExecuteResult)
    assert res[1] == ErrorResult("UNIQUE constraint failed: u.v")
    assert isinstance(res[2], ErrorResult) and "syntax error" in res[2].error
    assert res[3] == ErrorResult("no such table: missing")
    assert isinstance(res[4], ExecuteResult)  # without ?transaction the rest still runs
    (q,) = await run(c.query, [Statement("SELECT v FROM u ORDER BY v")])
    assert isinstance(q, QueryResult) and q.values == [["a"], ["b"]]

    (err,) = await run(c.query, [Statement("DELETE FROM u")])
    assert isinstance(err, ErrorResult) and "change database via query" in err.error


async def test_transaction_is_all_or_nothing(live_node: LiveNode) -> None:
    c = fc.Client(live_node.url)
    await run(c.execute, [Statement("CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")])
    res = await run(
        c.execute,
        [
            Statement("INSERT INTO u(v) VALUES('x')"),
            Statement("INSERT INTO u(v) VALUES('y')"),
            Statement("INSERT INTO u(v) VALUES('x')"),
            Statement("INSERT INTO u(v) VALUES('z')"),
        ],
        transaction=True,
    )
    assert len(res) == 3 and isinstance(res[2], ErrorResult)
    (q,) = await run(c.query, [Statement("SELECT count(*) FROM u")], "strong")
    assert isinstance(q, QueryResult) and q.values == [[0]]


async def test_request_errors_raise_typed_client_errors(live_node: LiveNode) -> None:
    c = fc.Client(live_node.url)
    with pytest.raises(fc.ProgrammingError, match=r"random|CURRENT|statement 1: BEGIN"):
        await run(c.execute, [Statement("BEGIN")])
    with pytest.raises(fc.ProgrammingError, match="level must be one of"):
        await run(c.query, [Statement("SELECT 1")], "bogus")
    with pytest.raises(fc.ProgrammingError, match=r"changes\(\)"):
        await run(c.execute, [Statement("SELECT changes()")])
    bad = fc.Client("http://127.0.0.1:1")
    with pytest.raises(fc.OperationalError):
        await run(bad.execute, [Statement("SELECT 1")])


async def test_dbapi_connection(live_node: LiveNode) -> None:
    def work() -> None:
        with fc.connect(live_node.url, level="strong") as conn:
            cur = conn.cursor()
            cur.execute("CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
            cur.execute("INSERT INTO p(name) VALUES(?)", ("a",))
            assert cur.lastrowid == 1 and cur.rowcount == 1
            cur.executemany("INSERT INTO p(name) VALUES(?)", [("b",), ("c",)])
            assert cur.rowcount == 2
            with pytest.raises(fc.IntegrityError):
                cur.executemany("INSERT INTO p(name) VALUES(?)", [("d",), ("a",)])
            cur.execute("SELECT id, name FROM p WHERE name != :n ORDER BY id", {"n": "b"})
            assert cur.description is not None and [d[0] for d in cur.description] == ["id", "name"]
            assert cur.fetchone() == (1, "a")
            assert cur.fetchall() == [(3, "c")]
            with pytest.raises(fc.OperationalError, match="no such table"):
                cur.execute("SELECT * FROM nope")

    await asyncio.to_thread(work)


async def test_backup_and_load(live_node: LiveNode) -> None:
    c = fc.Client(live_node.url)
    await run(
        c.execute,
        [Statement("CREATE TABLE k (a TEXT)"), Statement("INSERT INTO k VALUES('one')")],
    )
    dump = await run(c.backup, True)
    assert b"CREATE TABLE k" in dump and b"_flaredb_" not in dump
    raw = await run(c.backup)
    assert raw.startswith(b"SQLite format 3\x00")
    await run(c.execute, [Statement("INSERT INTO k VALUES('two')"), Statement("CREATE TABLE z(x)")])
    await run(c.load, raw)
    (q,) = await run(
        c.query, [Statement("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    )
    assert isinstance(q, QueryResult) and q.values == [["_flaredb_meta"], ["k"]]
    (q,) = await run(c.query, [Statement("SELECT a FROM k")])
    assert isinstance(q, QueryResult) and q.values == [["one"]]
    await run(c.load, b"CREATE TABLE d (x INTEGER); INSERT INTO d VALUES (7);")
    (q,) = await run(c.query, [Statement("SELECT x FROM d")])
    assert isinstance(q, QueryResult) and q.values == [[7]]
    with pytest.raises(fc.ProgrammingError, match="load refused: statement 1: schema statements"):
        await run(c.load, b"CREATE TABLE ts (t TEXT DEFAULT CURRENT_TIMESTAMP);")
    with pytest.raises(fc.ProgrammingError, match="does not run"):
        await run(c.load, b"CREATE TABLE broken (")
    with pytest.raises(fc.ProgrammingError):
        await run(c.load, b"\xff\xfe")


@pytest.mark.parametrize(
    ("failure", "fragment"),
    [
        (NoLeaderError("election in progress"), "no leader"),
        (ProposalDroppedError("overwritten"), "leadership changed"),
        (ProposalTimeoutError("slow"), "may or may not apply"),
        (NotLeaderError(None), "could not be forwarded"),
    ],
)
async def test_raft_failures_reach_the_client_as_503(
    live_node: LiveNode, monkeypatch: pytest.MonkeyPatch, failure: Exception, fragment: str
) -> None:
    async def fail(data: bytes, timeout: float = 5.0) -> None:
        raise failure

    monkeypatch.setattr(live_node.api.raft, "propose", fail)
    c = fc.Client(live_node.url)
    with pytest.raises(fc.OperationalError, match=fragment) as info:
        await run(c.execute, [Statement("CREATE TABLE never (x)")])
    assert info.value.status == 503
    with pytest.raises(fc.OperationalError, match=fragment):
        await run(c.query, [Statement("SELECT 1")], "strong")
    (q,) = await run(c.query, [Statement("SELECT 1")], "none")  # local reads still work
    assert isinstance(q, QueryResult) and q.values == [[1]]
