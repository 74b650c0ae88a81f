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

S = Statement

REFUSED = [
    "DROP TABLE '_flaredb_meta'",
    'DROP TABLE "_flaredb_meta"',
    "DROP TABLE [_flaredb_meta]",
    "DROP TABLE `_flaredb_meta`",
    "DROP TABLE _FLAREDB_META",
    "DROP TABLE main.'_flaredb_meta'",
    "ALTER TABLE '_flaredb_meta' RENAME TO mine",
    "ALTER TABLE '_flaredb_meta' ADD COLUMN x",
    "UPDATE '_flaredb_meta' SET v = 0",
    "DELETE FROM '_flaredb_meta'",
    "INSERT INTO '_flaredb_meta' VALUES ('applied_index', 0)",
    "CREATE INDEX i ON '_flaredb_meta'(v)",
    "CREATE TRIGGER tr AFTER UPDATE ON '_flaredb_meta' BEGIN SELECT 1; END",
    "CREATE TABLE copy AS SELECT * FROM '_flaredb_meta'",
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


NAMES = st.sampled_from(["t", "u", "'_flaredb_meta'", '"_flaredb_meta"', "sqlite_master"])
STATEMENTS = st.one_of(
    NAMES.map(lambda n: f"CREATE TABLE {n} (x)"),
    NAMES.map(lambda n: f"DROP TABLE {n}"),
    NAMES.map(lambda n: f"ALTER TABLE {n} RENAME TO w"),
    NAMES.map(lambda n: f"ALTER TABLE {n} ADD COLUMN y"),
    NAMES.map(lambda n: f"INSERT INTO {n} VALUES (1)"),
    NAMES.map(lambda n: f"DELETE FROM {n}"),
    st.sampled_from(
        [
            "VACUUM",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT s",
            "RELEASE s",
            "PRAGMA user_version = 7",
            "PRAGMA foreign_keys = ON",
            "ATTACH ':memory:' AS other",
            "DETACH other",
            "CREATE TABLE w AS SELECT * FROM sqlite_master",
        ]
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(STATEMENTS, min_size=1, max_size=4), min_size=1, max_size=6))
def test_random_statements_never_stop_the_next_write_and_replicas_agree(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[str]]
) -> None:
    root = tmp_path_factory.mktemp("replicas")
    replicas = [SQLiteStore(root / "a.sqlite"), SQLiteStore(root / "b.sqlite")]
    try:
        for store in replicas:
            for i, batch in enumerate(batches, start=1):
                apply(store, i, *batch)
            last = len(batches) + 1
            (ok,) = apply(store, last, "CREATE TABLE IF NOT EXISTS z (x)")
            assert isinstance(ok, ExecuteResult), ok
            (ins,) = apply(store, last + 1, "INSERT INTO z VALUES (1)")
            assert isinstance(ins, ExecuteResult), ins
            assert store.applied_index() == last + 1
        a, b = replicas
        assert a.dump_sql() == b.dump_sql()
    finally:
        for store in replicas:
            store.close()
