"""The determinism rewriter and statement classification."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from plasmacloud.flaredb.sqlscan import (
    NonDeterministicError,
    check_query,
    is_read_only,
    make_deterministic,
    rewrite_full,
    tokenize,
)

NOW = datetime(2026, 5, 4, 3, 2, 1, 987654, tzinfo=UTC)
LIT = "'2026-05-04 03:02:01.987'"


@pytest.mark.parametrize(
    ("sql", "want"),
    [
        (
            "INSERT INTO t VALUES (CURRENT_TIMESTAMP)",
            "INSERT INTO t VALUES ('2026-05-04 03:02:01')",
        ),
        (
            "INSERT INTO t VALUES (current_date, Current_Time)",
            "INSERT INTO t VALUES ('2026-05-04', '03:02:01')",
        ),
        ("UPDATE t SET a = datetime('now')", f"UPDATE t SET a = datetime({LIT})"),
        (
            "UPDATE t SET a = julianday('NOW', '+1 day')",
            f"UPDATE t SET a = julianday({LIT}, '+1 day')",
        ),
        (
            "INSERT INTO t VALUES (strftime('%s', 'now'))",
            f"INSERT INTO t VALUES (strftime('%s', {LIT}))",
        ),
        ("INSERT INTO t VALUES (unixepoch())", f"INSERT INTO t VALUES (unixepoch({LIT}))"),
        ("INSERT INTO t VALUES (strftime('%Y'))", f"INSERT INTO t VALUES (strftime('%Y', {LIT}))"),
        (
            "INSERT INTO t VALUES ('now', 'CURRENT_TIMESTAMP')",
            "INSERT INTO t VALUES ('now', 'CURRENT_TIMESTAMP')",
        ),
        ("INSERT INTO t VALUES (date('2020-01-01'))", "INSERT INTO t VALUES (date('2020-01-01'))"),
        (
            "INSERT INTO \"current_time\" VALUES (1) -- datetime('now')",
            "INSERT INTO \"current_time\" VALUES (1) -- datetime('now')",
        ),
        (
            "INSERT INTO t VALUES (random(), randomblob(4))",
            "INSERT INTO t VALUES (random(), randomblob(4))",
        ),
        ("CREATE VIEW v AS SELECT datetime('now')", "CREATE VIEW v AS SELECT datetime('now')"),
        (
            "CREATE TABLE t (id INTEGER DEFAULT (random()))",
            "CREATE TABLE t (id INTEGER DEFAULT (random()))",
        ),
    ],
)
def test_rewrites(sql: str, want: str) -> None:
    assert make_deterministic(sql, NOW) == want


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("CREATE TABLE t (ts TEXT DEFAULT CURRENT_TIMESTAMP)", "schema statements"),
        (
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET ts = datetime('now'); END",
            "schema statements",
        ),
        ("INSERT INTO t VALUES (changes())", "changes()"),
        ("INSERT INTO t VALUES (datetime('now', 'localtime'))", "time zone"),
        ("UPDATE t SET a = date(b, 'utc')", "time zone"),
        ("INSERT INTO t VALUES (total_changes())", "total_changes()"),
        ("INSERT INTO t SELECT last_insert_rowid()", "RETURNING"),
        ("SELECT load_extension('x')", "load_extension()"),
        ("BEGIN", "?transaction"),
        ("commit", "?transaction"),
        ("PRAGMA foreign_keys = ON", "PRAGMA"),
        ("ATTACH DATABASE 'x' AS y", "ATTACH"),
        ("VACUUM", "VACUUM"),
    ],
)
def test_rejects(sql: str, fragment: str) -> None:
    with pytest.raises(NonDeterministicError) as info:
        make_deterministic(sql, NOW)
    assert fragment in str(info.value)


def test_query_checks_and_read_only() -> None:
    check_query("PRAGMA table_info(t)")
    check_query("PRAGMA main.table_info('t')")
    check_query("PRAGMA user_version")
    for bad in (
        "PRAGMA query_only = 0",
        "PRAGMA query_only(0)",
        "PRAGMA main.journal_mode=DELETE",
    ):
        with pytest.raises(NonDeterministicError):
            check_query(bad)
    assert is_read_only("  select 1")
    assert is_read_only("WITH a AS (SELECT 1) SELECT * FROM a")
    assert not is_read_only("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a")
    assert not is_read_only("INSERT INTO t VALUES (1) RETURNING id")
    assert not is_read_only("-- only a comment")


@given(st.text(max_size=80))
def test_tokenizer_covers_every_character(sql: str) -> None:
    tokens = tokenize(sql)
    assert "".join(t.text for t in tokens) == sql


@given(st.text(alphabet="abc '\"()now,-*/\n", max_size=60))
def test_rewriter_never_crashes(sql: str) -> None:
    try:
        out = make_deterministic(sql, NOW)
    except NonDeterministicError:
        return
    assert "'now'" not in out.lower() or "(" not in sql or out == sql or "now" in out.lower()


fragments = st.sampled_from(
    [
        "INSERT INTO t VALUES (",
        "UPDATE t SET a = ",
        "SELECT ",
        "BEGIN",
        "datetime(",
        "'now'",
        ")",
        ",",
        "CURRENT_TIMESTAMP",
        "random()",
        "x",
        " ",
        "'",
        "-- c\n",
        "/* */",
        "_flaredb_m",
        "changes()",
        "pragma",
        "now",
        "1",
        "strftime('%s'",
    ]
)


@example("INSERT INTO t VALUES (1CURRENT_TIMESTAMP")  # a number ends at a letter
@given(st.lists(fragments, max_size=8).map("".join))
def test_fast_path_agrees_with_full_scan(sql: str) -> None:
    def outcome(fn: object) -> str:
        try:
            return str(fn(sql, NOW))  # type: ignore[operator]
        except NonDeterministicError as exc:
            return f"error: {exc}"

    assert outcome(make_deterministic) == outcome(rewrite_full)
