"""FlareDB's bookkeeping table is sealed off from client SQL by SQLite's authorizer.

The statements are applied straight from log entries (no scanner in front), as a
follower applies whatever the leader committed: the store itself must hold the line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plasmacloud.flaredb.command import Command
from plasmacloud.flaredb.models import ErrorResult, ExecuteResult, QueryResult, Statement
from plasmacloud.flaredb.store import SQLiteStore
from plasmacloud.raft.api import Entry

from .test_store import dump, entries, summary

S = Statement

REFUSED = [
    "DROP TABLE '_flaredb_meta'",
    'DROP TABLE "_flaredb_meta"',
    "DROP TABLE [_flaredb_meta]",
    "DROP TABLE `_flaredb_meta`",
    "DROP TABLE _FLAREDB_META",
    "DROP TABLE IF EXISTS `_FlareDB_Meta`",
    "DROP TABLE main.'_flaredb_meta'",
    "ALTER TABLE '_flaredb_meta' RENAME TO mine",
    "ALTER TABLE '_flaredb_meta' ADD COLUMN x",
    "UPDATE '_flaredb_meta' SET v = 0",
    "DELETE FROM '_flaredb_meta'",
    "INSERT INTO '_flaredb_meta' VALUES ('applied_index', 0)",
    "CREATE INDEX i ON '_flaredb_meta'(v)",
    "CREATE TRIGGER tr AFTER UPDATE ON '_flaredb_meta' BEGIN SELECT 1; END",
    "CREATE TABLE copy AS SELECT * FROM '_flaredb_meta'",
    "CREATE TABLE _flaredb_other (x)",
    # SQLite shows the authorizer only the old name of a renamed table: checked after.
    "ALTER TABLE t RENAME TO '_FlareDB_t'",
    "SELECT * FROM '_flaredb_meta'",
    "PRAGMA table_info('_flaredb_meta')",
]


def apply(store: SQLiteStore, index: int, *sql: str) -> list[object]:
    (results,) = store.apply([Entry(index, 1, Command.new([S(q) for q in sql]).encode())])
    return list(results)


@pytest.mark.parametrize("sql", REFUSED)
def test_every_form_of_touching_the_bookkeeping_is_refused_and_the_next_write_applies(
    tmp_path: Path, sql: str
) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        apply(store, 1, "CREATE TABLE t (x)")
        (refused,) = apply(store, 2, sql)
        assert isinstance(refused, ErrorResult), refused
        assert "reserved for FlareDB's own bookkeeping" in refused.error
        (ok,) = apply(store, 3, "INSERT INTO t VALUES (1)")
        assert isinstance(ok, ExecuteResult) and ok.rows_affected == 1
        assert store.applied_index() == 3
    finally:
        store.close()
    reopened = SQLiteStore(tmp_path / "db.sqlite")  # the applied index survived intact
    try:
        assert reopened.applied_index() == 3
    finally:
        reopened.close()


def test_a_view_or_trigger_reaching_the_bookkeeping_fails_per_statement(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        apply(store, 1, "CREATE TABLE t (x)")
        # Created (SQLite checks the body when it runs), but refused whenever it runs.
        apply(store, 2, "CREATE VIEW v AS SELECT * FROM _flaredb_meta")
        apply(store, 3, "CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM _flaredb_meta; END")
        (through_view,) = store.query([S("SELECT * FROM v")])
        assert isinstance(through_view, ErrorResult)
        (through_trigger,) = apply(store, 4, "INSERT INTO t VALUES (1)")
        assert isinstance(through_trigger, ErrorResult)
        assert "reserved" in through_trigger.error
        apply(store, 5, "DROP TRIGGER tr")
        (ok,) = apply(store, 6, "INSERT INTO t VALUES (2)")
        assert isinstance(ok, ExecuteResult)
        assert store.applied_index() == 6
    finally:
        store.close()


def test_a_client_dropping_everything_sqlite_master_lists_leaves_the_store_applying(
    tmp_path: Path,
) -> None:
    """What an upstream client's teardown does: every listed table, single-quoted."""
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        apply(store, 1, "CREATE TABLE a (x)", "CREATE TABLE b (y)")
        (listed,) = store.query([S("SELECT name FROM sqlite_master WHERE type='table'")])
        assert isinstance(listed, QueryResult)
        names = [row[0] for row in listed.values]
        results = apply(store, 2, *(f"DROP TABLE '{n}'" for n in names))
        dropped = [n for n, r in zip(names, results, strict=True) if isinstance(r, ExecuteResult)]
        assert sorted(dropped) == ["a", "b"]
        (ok,) = apply(store, 3, "CREATE TABLE c (z)")
        assert isinstance(ok, ExecuteResult)
        assert store.applied_index() == 3
    finally:
        store.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SAVEPOINT entry",
        "RELEASE entry",
        "ROLLBACK TO entry",
        "COMMIT",
        "BEGIN",
        "PRAGMA writable_schema = 1",
        "ATTACH ':memory:' AS other",
    ],
)
def test_statements_that_would_break_the_batch_transaction_are_refused(
    tmp_path: Path, sql: str
) -> None:
    """The HTTP layer refuses these texts; the store refuses them too, whatever reaches
    the log (the store's own savepoint is named "entry": a client's RELEASE of it would
    have failed the store's, and a COMMIT committed half a batch)."""
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        apply(store, 1, "CREATE TABLE t (x)")
        (refused, after) = apply(store, 2, sql, "INSERT INTO t VALUES (1)")
        assert isinstance(refused, ErrorResult) and "not authorized" not in refused.error
        assert isinstance(after, ExecuteResult) and after.rows_affected == 1
        assert store.applied_index() == 2
    finally:
        store.close()


def test_columns_may_use_the_prefix(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        apply(store, 1, "CREATE TABLE t (_flaredb_c)", "INSERT INTO t VALUES (1)")
        (res,) = store.query([S("SELECT * FROM t")])
        assert isinstance(res, QueryResult) and res.values == [[1]]
    finally:
        store.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM _flaredb_meta",
        "SELECT v FROM '_flaredb_meta'",
        "SELECT * FROM [_FLAREDB_META]",
        "SELECT * FROM main.`_flaredb_meta`",
        "PRAGMA table_info('_flaredb_meta')",
        "PRAGMA main.table_xinfo(_flaredb_meta)",
        "SELECT * FROM pragma_table_info('_flaredb_meta')",
    ],
)
def test_queries_cannot_read_the_bookkeeping(tmp_path: Path, sql: str) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        (res, ok) = store.query([S(sql), S("SELECT count(*) FROM sqlite_master")])
        assert isinstance(res, ErrorResult)
        assert "reserved for FlareDB's own bookkeeping" in res.error
        assert isinstance(ok, QueryResult)
    finally:
        store.close()


_NAMES = st.sampled_from(
    [
        "t",
        "u",
        "'t'",
        '"u"',
        "[t]",
        "`u`",
        "_flaredb_meta",
        "'_flaredb_meta'",
        "[_FLAREDB_META]",
        '"_FlareDB_meta"',
        "`_flaredb_meta`",
        "main._flaredb_meta",
        "sqlite_sequence",
        "_flaredb_x",
    ]
)
_STATEMENTS = st.one_of(
    _NAMES.map(lambda n: f"CREATE TABLE {n} (id INTEGER PRIMARY KEY AUTOINCREMENT, v)"),
    _NAMES.map(lambda n: f"CREATE TABLE IF NOT EXISTS {n} (v)"),
    _NAMES.map(lambda n: f"DROP TABLE {n}"),
    _NAMES.map(lambda n: f"DROP TABLE IF EXISTS {n}"),
    st.tuples(_NAMES, _NAMES).map(lambda p: f"ALTER TABLE {p[0]} RENAME TO {p[1]}"),
    _NAMES.map(lambda n: f"ALTER TABLE t RENAME TO {n}"),
    _NAMES.map(lambda n: f"ALTER TABLE {n} ADD COLUMN w"),
    _NAMES.map(lambda n: f"INSERT INTO {n} (v) VALUES (1)"),
    _NAMES.map(lambda n: f"UPDATE {n} SET v = 2"),
    _NAMES.map(lambda n: f"DELETE FROM {n}"),
    _NAMES.map(lambda n: f"CREATE VIEW IF NOT EXISTS w AS SELECT * FROM {n}"),
    _NAMES.map(lambda n: f"CREATE INDEX IF NOT EXISTS i ON {n}(v)"),
    _NAMES.map(lambda n: f"PRAGMA table_info({n})"),
    _NAMES.map(
        lambda n: f"CREATE TRIGGER IF NOT EXISTS tr AFTER INSERT ON t BEGIN DELETE FROM {n}; END"
    ),
    st.sampled_from(
        [
            "VACUUM",
            "BEGIN",
            "BEGIN IMMEDIATE",
            "COMMIT",
            "END",
            "ROLLBACK",
            "SAVEPOINT sp",
            "SAVEPOINT entry",
            "RELEASE entry",
            "RELEASE stmt",
            "ROLLBACK TO entry",
            "ROLLBACK TO stmt",
            "PRAGMA writable_schema = 1",
            "PRAGMA journal_mode = DELETE",
            "PRAGMA foreign_keys = ON",
            "PRAGMA user_version = 7",
            "DROP VIEW IF EXISTS w",
            "DROP TRIGGER IF EXISTS tr",
            "SELECT * FROM sqlite_master",
            "INSERT OR ROLLBACK INTO t (v) VALUES (1)",
            "CREATE TRIGGER IF NOT EXISTS rb BEFORE UPDATE ON t "
            "BEGIN SELECT RAISE(ROLLBACK, 'no'); END",
        ]
    ),
)
# An entry: some statements, as one request or with ?transaction.
_ENTRIES = st.lists(
    st.tuples(st.lists(_STATEMENTS, min_size=1, max_size=4), st.booleans()), min_size=1, max_size=8
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=_ENTRIES, split=st.integers(min_value=1, max_value=8))
def test_no_statement_sequence_stops_the_next_write_or_splits_replicas(
    tmp_path_factory: pytest.TempPathFactory, sequence: list[tuple[list[str], bool]], split: int
) -> None:
    """Whatever clients send (the HTTP layer's text checks bypassed), every entry applies
    with a result per statement, the next ordinary write still applies, and two replicas
    applying the same entries in different batches end identical."""
    tmp = tmp_path_factory.mktemp("prop")
    cmds = [Command.new([S(s) for s in stmts], transaction) for stmts, transaction in sequence]
    cmds.append(
        Command.new([S("CREATE TABLE IF NOT EXISTS probe (v)"), S("INSERT INTO probe VALUES (1)")])
    )
    log = entries(*cmds)
    one, other = SQLiteStore(tmp / "a.sqlite"), SQLiteStore(tmp / "b.sqlite")
    try:
        whole = one.apply(log)
        parts = [r for i in range(0, len(log), split) for r in other.apply(log[i : i + split])]
        assert [summary(r) for r in whole] == [summary(r) for r in parts]
        assert one.applied_index() == other.applied_index() == len(log)
        assert summary(whole[-1]) == [("ok", 0, 0), ("ok", whole[-1][1].last_insert_id, 1)]
        assert dump(one) == dump(other)
        for store in (one, other):
            (meta,) = store._w.execute("SELECT v FROM _flaredb_meta").fetchall()
            assert meta == (len(log),)
            tables = store._w.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            assert [n for (n,) in tables if n.lower().startswith("_flaredb_")] == ["_flaredb_meta"]
    finally:
        one.close()
        other.close()
