"""Declared result column types read from SQLite, and the fallback where they cannot be."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasmacloud.flaredb import decltype
from plasmacloud.flaredb.command import Command
from plasmacloud.flaredb.decltype import DeclaredTypes
from plasmacloud.flaredb.models import QueryResult, Statement
from plasmacloud.flaredb.store import SQLiteStore
from plasmacloud.raft.api import Entry


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    c.execute("CREATE TABLE t (a INT, b Number(5), c)")
    yield c
    c.close()


def test_declared_types_as_sqlite_compiles_them(conn: sqlite3.Connection, tmp_path: Path) -> None:
    types = DeclaredTypes(conn, tmp_path / "db.sqlite")
    assert types.of("SELECT a AS x, b, c, a + 1 FROM t", 4) == ["int", "number(5)", "", ""]
    assert types.of("INSERT INTO t VALUES (1, 2, 3) RETURNING b", 1) == ["number(5)"]
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE u (d DATETIME)")  # not committed: the same connection sees it
    assert types.of("SELECT d FROM u", 1) == ["datetime"]
    conn.execute("ROLLBACK")
    assert types.of("SELECT nope FROM t", 1) == [""]  # does not compile
    assert types.of("SELECT a FROM t", 2) == ["", ""]  # not the statement that ran


def test_another_connections_handle_is_not_used(conn: sqlite3.Connection, tmp_path: Path) -> None:
    assert DeclaredTypes(conn, tmp_path / "other.sqlite").of("SELECT a FROM t", 1) == [""]


def test_without_the_library_types_come_from_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Python whose SQLite is linked in statically: every column is an expression."""
    monkeypatch.setattr(decltype, "_library", lambda: None)
    store = SQLiteStore(tmp_path / "s.sqlite")
    try:
        create = [
            Statement("CREATE TABLE t (a INT, b TEXT)"),
            Statement("INSERT INTO t VALUES (1, 'x')"),
        ]
        store.apply([Entry(1, 1, Command.new(create).encode())])
        (q,) = store.query([Statement("SELECT a, b FROM t")])
        assert isinstance(q, QueryResult) and q.types == ["integer", "text"]
    finally:
        store.close()
