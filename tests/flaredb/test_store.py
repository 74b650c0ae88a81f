"""The SQLite state machine: transactions, batching, determinism, snapshots, restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plasmacloud.flaredb import store as store_module
from plasmacloud.flaredb.command import LOAD, Command
from plasmacloud.flaredb.models import (
    ErrorResult,
    ExecuteResult,
    QueryResult,
    Statement,
    group_runs,
)
from plasmacloud.flaredb.sqlscan import make_deterministic
from plasmacloud.flaredb.store import SQLiteStore, load_statements
from plasmacloud.raft.api import Entry

S = Statement


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "db.sqlite")
    yield s
    s.close()


def entries(*cmds: Command, start: int = 1) -> list[Entry]:
    return [Entry(start + i, 1, c.encode()) for i, c in enumerate(cmds)]


def dump(store: SQLiteStore) -> list[str]:
    return list(store.dump_sql())


def workload() -> list[Command]:
    """A mixed workload with everything that could make replicas diverge."""
    sql = [
        [
            S(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE, "
                "r INTEGER DEFAULT (random()), "
                "b BLOB, ts TEXT)"
            )
        ],
        [
            S("CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, msg TEXT, r)"),
            S(
                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log(msg, r) "
                "VALUES (new.v, random()); END"
            ),
        ],
        [
            S(
                make_deterministic(
                    "INSERT INTO t(v, b, ts) VALUES (?, randomblob(16), CURRENT_TIMESTAMP)"
                ),
                (f"v{i}",),
            )
            for i in range(20)
        ],
        [S("INSERT INTO t(v) VALUES ('v3')"), S("UPDATE t SET r = random() WHERE id % 3 = 0")],
        [S("INSERT INTO t(v) VALUES ('tx1')"), S("INSERT INTO t(v) VALUES ('v1')")],
        [
            S("INSERT OR ROLLBACK INTO t(v) VALUES ('gone')"),
            S("INSERT OR ROLLBACK INTO t(v) VALUES ('v2')"),
        ],
        [
            S("DELETE FROM t WHERE id > 15"),
            S("INSERT INTO t(v, r) SELECT 'x' || id, random() FROM t"),
        ],
    ]
    return [Command.new(stmts, transaction=(i == 4)) for i, stmts in enumerate(sql)]


def test_replicas_identical_whatever_the_batch_boundaries(tmp_path: Path) -> None:
    cmds = workload()
    all_entries = entries(*cmds)
    replicas = [SQLiteStore(tmp_path / f"n{i}" / "db.sqlite") for i in range(3)]
    try:
        replicas[0].apply(all_entries)  # one batch
        for e in all_entries:  # one entry at a time
            replicas[1].apply([e])
        replicas[2].apply(all_entries[:3])
        replicas[2].apply(all_entries[3:])
        dumps = [dump(r) for r in replicas]
        assert dumps[0] == dumps[1] == dumps[2]
        assert len(dumps[0]) > 40
        assert {r.applied_index() for r in replicas} == {len(cmds)}
        (q,) = replicas[0].query([S("SELECT count(*), count(DISTINCT r) FROM t")])
        assert isinstance(q, QueryResult) and q.values[0][0] == q.values[0][1]
        (q,) = replicas[0].query([S("SELECT v FROM t WHERE v IN ('tx1', 'gone')")])
        assert isinstance(q, QueryResult) and q.values == []
        for r in replicas:
            (ok,) = r.query([S("PRAGMA integrity_check")])
            assert isinstance(ok, QueryResult) and ok.values == [["ok"]]
    finally:
        for r in replicas:
            r.close()


def test_transaction_rolls_back_and_results_stop_at_error(store: SQLiteStore) -> None:
    store.apply(entries(Command.new([S("CREATE TABLE u (v TEXT UNIQUE)")])))
    cmd = Command.new(
        [
            S("INSERT INTO u VALUES ('a')"),
            S("INSERT INTO u VALUES ('a')"),
            S("INSERT INTO u VALUES ('b')"),
        ],
        transaction=True,
    )
    (res,) = store.apply(entries(cmd, start=2))
    assert len(res) == 2 and res[1] == ErrorResult("UNIQUE constraint failed: u.v", res[1].time)
    (q,) = store.query([S("SELECT count(*) FROM u")])
    assert isinstance(q, QueryResult) and q.values == [[0]]


def test_a_pinned_snapshot_is_the_state_when_pinned(tmp_path: Path) -> None:
    a = SQLiteStore(tmp_path / "a.sqlite")
    b = SQLiteStore(tmp_path / "b.sqlite")
    try:
        a.apply(entries(*workload()))
        read, index, before = a.snapshot_reader(), a.applied_index(), dump(a)
        # writes go on while it is read
        a.apply(entries(Command.new([S("INSERT INTO t(v) VALUES ('later')")]), start=index + 1))
        b.restore(read(), index)
        assert dump(b) == before != dump(a)
    finally:
        a.close()
        b.close()


def test_restart_keeps_rows_and_applied_index(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    s = SQLiteStore(path)
    s.apply(
        entries(
            Command.new([S("CREATE TABLE p (x)")]), Command.new([S("INSERT INTO p VALUES (1)")])
        )
    )
    s.close()
    s = SQLiteStore(path)
    try:
        assert s.applied_index() == 2
        (q,) = s.query([S("SELECT x FROM p")])
        assert isinstance(q, QueryResult) and q.values == [[1]]
    finally:
        s.close()


def test_snapshot_restore_replaces_everything(tmp_path: Path) -> None:
    a = SQLiteStore(tmp_path / "a.sqlite")
    b = SQLiteStore(tmp_path / "b.sqlite")
    try:
        a.apply(entries(*workload()))
        b.apply(entries(Command.new([S("CREATE TABLE other (y)")])))
        b.restore(a.snapshot(), 41)
        assert b.applied_index() == 41
        assert dump(a) == dump(b)
        (q,) = b.query([S("SELECT count(*) FROM sqlite_master WHERE name = 'other'")])
        assert isinstance(q, QueryResult) and q.values == [[0]]
        # And it keeps applying after the restore.
        (res,) = b.apply(entries(Command.new([S("INSERT INTO t(v) VALUES ('after')")]), start=42))
        assert isinstance(res[0], ExecuteResult) and res[0].rows_affected == 1
    finally:
        a.close()
        b.close()


def test_load_replaces_user_tables(store: SQLiteStore, tmp_path: Path) -> None:
    store.apply(
        entries(Command.new([S("CREATE TABLE old (x)"), S("CREATE VIEW oldv AS SELECT 1")]))
    )
    stmts = load_statements(
        b"CREATE TABLE n (x INTEGER PRIMARY KEY AUTOINCREMENT, y); "
        b"INSERT INTO n(y) VALUES (1), (2);"
    )
    (res,) = store.apply(entries(Command.new(stmts, True, LOAD), start=2))
    assert not [r for r in res if isinstance(r, ErrorResult)]
    (q,) = store.query(
        [S("SELECT name FROM sqlite_master WHERE type IN ('table','view') ORDER BY 1")]
    )
    assert isinstance(q, QueryResult)
    assert q.values == [["_flaredb_meta"], ["n"], ["sqlite_sequence"]]
    assert store.applied_index() == 2


def test_failed_load_keeps_the_old_tables(store: SQLiteStore) -> None:
    store.apply(
        entries(Command.new([S("CREATE TABLE keep (x)"), S("INSERT INTO keep VALUES (1)")]))
    )
    bad = [S("CREATE TABLE n (x)"), S("INSERT INTO missing VALUES (1)")]
    (res,) = store.apply(entries(Command.new(bad, True, LOAD), start=2))
    assert isinstance(res[-1], ErrorResult) and "no such table: missing" in res[-1].error
    (q,) = store.query([S("SELECT x FROM keep")])
    assert isinstance(q, QueryResult) and q.values == [[1]]
    (q,) = store.query([S("SELECT count(*) FROM sqlite_master WHERE name = 'n'")])
    assert isinstance(q, QueryResult) and q.values == [[0]]


def test_garbage_entry_is_an_error_result_not_a_crash(store: SQLiteStore) -> None:
    (res,) = store.apply([Entry(1, 1, b"\x00garbage")])
    assert isinstance(res[0], ErrorResult) and "malformed log entry" in res[0].error
    assert store.applied_index() == 1


def test_endless_statement_hits_the_deterministic_work_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "WORK_LIMIT_STEPS", 200_000)
    endless = (
        "INSERT INTO n SELECT x FROM (WITH RECURSIVE c(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c)"
    )
    cmds = [
        Command.new([S("CREATE TABLE n (x)")]),
        Command.new([S("INSERT INTO n VALUES (1)"), S(endless), S("INSERT INTO n VALUES (2)")]),
    ]
    replicas = [SQLiteStore(tmp_path / f"r{i}.sqlite") for i in range(2)]
    try:
        replicas[0].apply(entries(*cmds))  # one batch
        for e in entries(*cmds):  # one entry at a time
            replicas[1].apply([e])
        # SQLite rolls an interrupted write back whole, so the request had no effect.
        assert dump(replicas[0]) == dump(replicas[1])
        (q,) = replicas[0].query([S("SELECT count(*) FROM n")])
        assert isinstance(q, QueryResult) and q.values == [[0]]
        (res,) = replicas[0].apply(entries(cmds[1], start=3))
        assert len(res) == 1 and isinstance(res[0], ErrorResult)
        assert "work limit" in res[0].error and "whole request was rolled back" in res[0].error
        assert replicas[0].applied_index() == 3
    finally:
        for r in replicas:
            r.close()


def test_dump_reads_every_table_from_one_state_while_entries_commit(store: SQLiteStore) -> None:
    """/db/backup?fmt=sql dumps in the reader thread while the event loop applies: a batch
    committed mid-dump must show up in all tables of the dump or in none (here: not the
    trigger's audit rows without the rows that fired it), and reads after it see it."""
    store.apply(
        entries(
            Command.new(
                [
                    S("CREATE TABLE m (id INTEGER PRIMARY KEY, v TEXT)"),
                    S("CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT)"),
                    S(
                        "CREATE TRIGGER tr AFTER INSERT ON m "
                        "BEGIN INSERT INTO audit(what) VALUES (new.v); END"
                    ),
                    S("INSERT INTO m(v) VALUES ('a')"),
                ]
            )
        )
    )
    insert_b = entries(Command.new([S("INSERT INTO m(v) VALUES ('b')")]), start=2)

    def commit_between_tables(sql: str) -> None:
        # The dump reads tables by name: "audit" first, then "m".
        if sql.startswith('SELECT \'INSERT INTO "m"') and store.applied_index() == 1:
            store.apply(insert_b)

    store._r.set_trace_callback(commit_between_tables)
    lines = dump(store)
    store._r.set_trace_callback(None)
    assert store.applied_index() == 2  # the commit did happen mid-dump
    inserts = [line for line in lines if line.startswith("INSERT INTO")]
    assert inserts == [
        "INSERT INTO \"audit\" VALUES(1,'a');\n",
        "INSERT INTO \"m\" VALUES(1,'a');\n",
    ]
    (count,) = store.query([S("SELECT count(*) FROM m")])
    assert isinstance(count, QueryResult) and count.values == [[2]]


@pytest.mark.parametrize("opener", ["BEGIN", "BEGIN DEFERRED", "SAVEPOINT sp"])
def test_a_query_that_opens_a_transaction_does_not_pin_later_reads(
    store: SQLiteStore, opener: str
) -> None:
    """Reads after a client's BEGIN on the read connection still see every later commit
    (a linearizable read after its barrier must not answer from an old snapshot)."""
    store.apply(entries(Command.new([S("CREATE TABLE t (x)"), S("INSERT INTO t VALUES (1)")])))
    first = store.query([S(opener), S("SELECT count(*) FROM t"), S("SELECT sum(x) FROM t")])
    assert [r.values for r in first[1:] if isinstance(r, QueryResult)] == [[[1]], [[1]]]
    store.apply(entries(Command.new([S("INSERT INTO t VALUES (2)")]), start=2))
    (count,) = store.query([S("SELECT count(*) FROM t")])
    assert isinstance(count, QueryResult) and count.values == [[2]]


def test_entry_encoding_groups_runs_of_one_sql_text_and_round_trips() -> None:
    ins = "INSERT INTO t(v, b) VALUES (?, ?)"
    stmts = [S(ins, ("a", b"\x00\x01")), S(ins, (None, 1.5)), S("DELETE FROM t"), S(ins, (1, 2))]
    stmts += [S("UPDATE t SET v=:v", {"v": "x"}), S("UPDATE t SET v=:v", {"v": None})]
    cmd = Command.new(stmts, transaction=True)
    data = cmd.encode()
    assert data.count(ins.encode()) == 2  # once per run, not once per statement
    back = Command.decode(data)
    assert back.statements == tuple(stmts)  # BLOBs included
    assert (back.transaction, back.seed, back.kind) == (True, cmd.seed, cmd.kind)


def test_entries_in_the_ungrouped_format_still_decode() -> None:
    old = b'{"k":"execute","s":["CREATE TABLE t (v)",["INSERT INTO t VALUES (?)",true]],"seed":7}'
    cmd = Command.decode(old)
    assert cmd.statements == (S("CREATE TABLE t (v)"), S("INSERT INTO t VALUES (?)", (1,)))
    assert (cmd.transaction, cmd.seed) == (False, 7)


def test_a_failed_statement_is_undone_alone_and_random_stays_seeded(tmp_path: Path) -> None:
    """Statements run without their own savepoint until one fails; then the entry reruns
    with one each: the failed statement's partial rows (INSERT OR FAIL) are gone, the
    others' kept, and random() gives what a clean run from the entry's seed gives."""
    setup = Command.new([S("CREATE TABLE f (x UNIQUE, r)"), S("INSERT INTO f VALUES (3, 0)")])
    mixed = Command.new(
        [
            S("INSERT INTO f VALUES (1, random())"),
            S("INSERT OR FAIL INTO f VALUES (2, 0), (3, 0)"),  # inserts 2, then fails
            S("INSERT INTO f VALUES (4, random())"),
        ]
    )
    clean = Command(
        tuple(
            group_runs(
                [S("INSERT INTO f VALUES (1, random())"), S("INSERT INTO f VALUES (4, random())")]
            )
        ),
        seed=mixed.seed,
    )
    a, b = SQLiteStore(tmp_path / "a"), SQLiteStore(tmp_path / "b")
    try:
        (_, res) = a.apply(entries(setup, mixed))
        b.apply(entries(setup, clean))
        assert isinstance(res[1], ErrorResult) and "UNIQUE" in res[1].error
        assert [type(r) for r in (res[0], res[2])] == [ExecuteResult, ExecuteResult]
        assert res[2].last_insert_id == 3  # type: ignore[union-attr]
        rows = [S("SELECT x, r FROM f ORDER BY x")]
        values = a.query(rows)[0].values  # type: ignore[union-attr]
        assert values == b.query(rows)[0].values  # type: ignore[union-attr]
        assert [v[0] for v in values] == [1, 3, 4]
    finally:
        a.close()
        b.close()


def reference_results(setup: list[str], stmts: list[Statement]) -> list[tuple[str, int, int]]:
    """(kind, last_insert_id, rows_affected) of each statement run one at a time on a plain
    sqlite3 connection: what the bulk path must report for every row."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for sql in setup:
        conn.execute(sql)
    out = []
    for s in stmts:
        try:
            cur = conn.execute(s.sql, s.params)
        except sqlite3.Error as exc:
            out.append((str(exc), 0, 0))
            continue
        if cur.description is not None:
            out.append((repr(cur.fetchall()), 0, 0))
            continue
        rows = max(cur.rowcount, 0)
        inserted = rows and s.sql.upper().startswith(("INSERT", "REPLACE"))
        out.append(("ok", int(cur.lastrowid or 0) if inserted else 0, rows))
    conn.close()
    return out


def summary(results: list[Any]) -> list[tuple[str, int, int]]:
    out = []
    for r in results:
        if isinstance(r, ErrorResult):
            out.append((r.error, 0, 0))
        elif isinstance(r, QueryResult):
            out.append((repr([tuple(v) for v in r.values]), 0, 0))
        else:
            out.append(("ok", r.last_insert_id, r.rows_affected))
    return out


def test_bulk_runs_report_each_statements_own_counters(store: SQLiteStore) -> None:
    """Runs go through one prepared statement in a tight loop; every row still gets what
    running it alone reports: ids (explicit, automatic, negative), rows_affected 0 for an
    ignored insert, counts of UPDATE/DELETE runs, rows of a SELECT or RETURNING run."""
    setup = ["CREATE TABLE k (id INTEGER PRIMARY KEY, v TEXT UNIQUE)"]
    ins = "INSERT INTO k(v) VALUES (?)"
    stmts = [S(ins, (f"a{i}",)) for i in range(50)]
    stmts += [S("INSERT INTO k(id, v) VALUES (?, ?)", (i, f"b{i}")) for i in (-7, 500, 90)]
    stmts += [S("INSERT OR IGNORE INTO k(v) VALUES (?)", (v,)) for v in ("a1", "new", "a2")]
    stmts += [S("INSERT OR REPLACE INTO k(v) VALUES (?)", (v,)) for v in ("a3", "a4")]
    stmts += [S("UPDATE k SET v = v || '!' WHERE id > ?", (n,)) for n in (40, 1000)]
    stmts += [S("SELECT count(*) FROM k WHERE id < ?", (n,)) for n in (10, 0)]
    stmts += [S("INSERT INTO k(v) VALUES (?) RETURNING id", (v,)) for v in ("r1", "r2")]
    stmts += [S("DELETE FROM k WHERE id = ?", (i,)) for i in (1, 1, 2)]
    want = reference_results(setup, stmts)
    store.apply(entries(Command.new([S(setup[0])])))
    for transaction, index in ((True, 2), (False, 3)):
        store.apply(entries(Command.new([S("DELETE FROM k")]), start=index * 10))
        (res,) = store.apply(entries(Command.new(stmts, transaction), start=index * 10 + 1))
        # A table emptied by DELETE hands out rowids again from max(rowid) + 1, so the ids
        # match the fresh reference database's.
        assert summary(res) == want


def test_a_failing_row_in_a_bulk_run(store: SQLiteStore) -> None:
    """In a transaction the whole bulk request is undone and results stop at the failed
    row; without one, only that row fails and every other row stays."""
    store.apply(entries(Command.new([S("CREATE TABLE u (v TEXT UNIQUE)")])))
    rows = [S("INSERT INTO u VALUES (?)", (v,)) for v in ("a", "b", "c", "b", "d", "e")]
    (res,) = store.apply(entries(Command.new(rows, transaction=True), start=2))
    assert [type(r) for r in res] == [ExecuteResult] * 3 + [ErrorResult]
    assert "UNIQUE" in res[3].error  # type: ignore[union-attr]
    (q,) = store.query([S("SELECT count(*) FROM u")])
    assert isinstance(q, QueryResult) and q.values == [[0]]
    (res,) = store.apply(entries(Command.new(rows), start=3))
    assert [type(r).__name__ for r in res] == ["ExecuteResult"] * 3 + ["ErrorResult"] * 1 + [
        "ExecuteResult"
    ] * 2
    assert [r.last_insert_id for r in res if isinstance(r, ExecuteResult)] == [1, 2, 3, 4, 5]
    (q,) = store.query([S("SELECT group_concat(v, '') FROM u")])
    assert isinstance(q, QueryResult) and q.values == [["abcde"]]


def test_the_wal_is_checkpointed_off_the_apply_path_and_stays_bounded(store: SQLiteStore) -> None:
    """Commits only append to the WAL (SQLite's automatic checkpoint is off); past
    CHECKPOINT_WAL_BYTES the checkpointer thread copies it into the database file, the
    WAL starts over and is cut back, so it stays near that size however much is written."""
    assert store._w.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    store.apply(entries(Command.new([S("CREATE TABLE w (v BLOB)")])))
    blob = b"\x01" * 1_000_000
    sizes = []
    for i in range(24):  # 24 MB written in all
        store.apply(entries(Command.new([S("INSERT INTO w VALUES (?)", (blob,))]), start=2 + i))
        assert store._checkpointer.wait_idle(timeout=60)
        sizes.append(Path(f"{store.path}-wal").stat().st_size)
    limit = store_module.CHECKPOINT_WAL_BYTES
    assert max(sizes) < 2 * limit + 2_000_000 and min(sizes[8:]) <= limit + 2_000_000
    (q,) = store.query([S("SELECT count(*), sum(length(v)) FROM w")])
    # BLOB parameters travel base64-encoded through the log, so each value is text here.
    assert isinstance(q, QueryResult) and q.values[0][0] == 24


def test_a_proposers_own_entry_is_applied_without_decoding_only_by_identity(
    store: SQLiteStore,
) -> None:
    """The node that proposed an entry hands the engine's bytes object back to apply and
    skips decoding it; equal bytes from anywhere else (the log on disk, a peer) are
    decoded. Here the remembered command differs from the bytes on purpose, to show
    which one ran."""
    store.apply(entries(Command.new([S("CREATE TABLE p (v)")])))
    data = Command.new([S("INSERT INTO p VALUES ('decoded')")]).encode()
    other = Command.new([S("INSERT INTO p VALUES ('remembered')")])
    store.remember_proposal(data, other)
    store.apply([Entry(2, 1, bytes(bytearray(data)))])  # equal bytes, another object
    store.apply([Entry(3, 1, data)])
    store.forget_proposal(data)
    (q,) = store.query([S("SELECT v FROM p ORDER BY rowid")])
    assert isinstance(q, QueryResult) and q.values == [["decoded"], ["remembered"]]
    assert store._proposed == {}


def test_plain_insert_runs_through_executemany_match_the_statement_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of a plain INSERT goes through one executemany and derives each row's id;
    results, random() values and the database must be what the one-statement-at-a-time
    loop gives, for tables where ids are consecutive (AUTOINCREMENT after deletes too)
    and for the ones that must not take that path (trigger, WITHOUT ROWID, explicit
    ids), with failing rows in and out of a transaction."""
    ins_a = "INSERT INTO a(v, r) VALUES (?, random())"
    ins_b = "INSERT INTO b(v) VALUES (?)"
    workload = [
        Command.new(
            [
                S("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT UNIQUE, r)"),
                S("CREATE TABLE b (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)"),
                S("CREATE TABLE c (k TEXT PRIMARY KEY, v) WITHOUT ROWID"),
                S("CREATE TABLE d (v)"),
                S("CREATE TRIGGER d_t AFTER INSERT ON d BEGIN INSERT INTO d VALUES ('t'); END"),
                S("CREATE TABLE e (id INTEGER PRIMARY KEY, v TEXT UNIQUE ON CONFLICT REPLACE)"),
                S("CREATE TABLE f (id INTEGER PRIMARY KEY, v TEXT UNIQUE ON CONFLICT IGNORE)"),
            ]
        ),
        Command.new(
            [S(ins_a, (f"a{i}",)) for i in range(20)]
            + [S(ins_b, (f"b{i}",)) for i in range(5)]
            + [S("DELETE FROM b WHERE id > 2")]
            + [S(ins_b, (f"c{i}",)) for i in range(5)]
            + [S("INSERT INTO c(k, v) VALUES (?, ?)", (f"k{i}", i)) for i in range(4)]
            + [S("INSERT INTO d(v) VALUES (?)", (i,)) for i in range(4)]
            + [S("INSERT INTO a(id, v) VALUES (?, ?)", (100 + i, f"x{i}")) for i in range(3)]
            + [S('INSERT INTO [a] ("v") VALUES (?);', (f"q{i}",)) for i in range(3)]
            # A replaced last row gives its rowid to the new one; an ignored row none.
            + [S("INSERT INTO e(v) VALUES (?)", (v,)) for v in ("p", "q", "q", "r")]
            + [S("INSERT INTO f(v) VALUES (?)", (v,)) for v in ("p", "q", "q", "r")]
        ),
        # A duplicate in the middle of a plain run: in a transaction, and without one.
        Command.new([S(ins_a, (v,)) for v in ("n1", "n2", "a3", "n3")], transaction=True),
        Command.new([S(ins_a, (v,)) for v in ("m1", "m2", "a3", "m3")]),
        Command.new([S(ins_a, (f"z{i}",)) for i in range(30)], transaction=True),
    ]
    many_runs = []
    real_run_many = SQLiteStore._run_many

    def counting(self: SQLiteStore, run: Any, table: str, results: list[Any]) -> bool:
        done = real_run_many(self, run, table, results)
        many_runs.append(done)
        return done

    monkeypatch.setattr(SQLiteStore, "_run_many", counting)
    fast = SQLiteStore(tmp_path / "fast.sqlite")
    fast_results = [fast.apply(entries(c, start=i + 1))[0] for i, c in enumerate(workload)]
    # The plain runs into a (4, twice [one fails]), b (2) and f (its ignored row shows
    # in the row count): the rest took the loop.
    assert many_runs == [True, True, True, True, False, False, False, True]
    monkeypatch.setattr(store_module, "_plain_insert", lambda sql: None)
    slow = SQLiteStore(tmp_path / "slow.sqlite")
    try:
        slow_results = [slow.apply(entries(c, start=i + 1))[0] for i, c in enumerate(workload)]
        assert [summary(r) for r in fast_results] == [summary(r) for r in slow_results]
        assert dump(fast) == dump(slow)
        assert [r.last_insert_id for r in fast_results[1][26:31]] == [6, 7, 8, 9, 10]
    finally:
        fast.close()
        slow.close()


def test_only_single_row_inserts_with_a_column_list_count_as_plain() -> None:
    plain = store_module._plain_insert
    assert plain("INSERT INTO t(a, b) VALUES (?, (SELECT max(x) FROM u));") == ("t", ("a", "b"))
    assert plain('insert into "my ""t""" ([a], `b`) values (?, ?)') == ('my "t"', ("a", "b"))
    for sql in (
        "INSERT INTO t VALUES (?)",  # no column list: could name the rowid
        "INSERT INTO t(a) VALUES (?), (?)",
        "INSERT INTO t(a) VALUES (?) RETURNING a",
        "INSERT INTO t(a) VALUES (?) ON CONFLICT DO NOTHING",
        "INSERT OR IGNORE INTO t(a) VALUES (?)",
        "REPLACE INTO t(a) VALUES (?)",
        "INSERT INTO main.t(a) VALUES (?)",
        "INSERT INTO t(a) SELECT ?",
        "WITH x AS (SELECT 1) INSERT INTO t(a) VALUES (?)",
        "INSERT INTO t(a) DEFAULT VALUES",
        "INSERT INTO t(a VALUES (?)",
    ):
        assert plain(sql) is None, sql


def write(store: SQLiteStore, *sql: str) -> list[Any]:
    """Apply one entry of ``sql`` statements as the next log index; its results."""
    (res,) = store.apply(entries(Command.new([S(s) for s in sql]), start=store.applied_index() + 1))
    assert isinstance(res, list)
    return res


def test_backups_and_dumps_leave_the_bookkeeping_out_and_loads_never_bring_it(
    store: SQLiteStore, tmp_path: Path
) -> None:
    write(store, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)")
    backup = tmp_path / "backup.db"
    backup.write_bytes(store.backup_file())
    with sqlite3.connect(backup) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert names == ["t"]
    assert not [line for line in dump(store) if "_flaredb_" in line.lower()]
    # A file copied off a node's disk (any case of the name) loads without its index.
    with sqlite3.connect(backup) as conn:
        conn.execute("CREATE TABLE _FLAREDB_META (k, v)")
        conn.execute("INSERT INTO _FLAREDB_META VALUES ('applied_index', 99)")
    stmts = load_statements(backup.read_bytes())
    assert not [s for s in stmts if "_flaredb_" in s.sql.lower()]
    (res,) = store.apply(entries(Command.new(stmts, True, LOAD), start=2))
    assert not [r for r in res if isinstance(r, ErrorResult)]
    assert store.applied_index() == 2
    # Snapshots are the whole file: a restored replica keeps counting from the index.
    other = SQLiteStore(tmp_path / "other.sqlite")
    other.restore(store.snapshot(), 2)
    assert summary(write(other, "INSERT INTO t VALUES (2)")) == [("ok", 2, 1)]
    assert other.applied_index() == 3
    other.close()


def test_an_apply_that_raises_fails_the_store_for_good_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[str] = []
    store = SQLiteStore(tmp_path / "db.sqlite", on_failure=failures.append)
    write(store, "CREATE TABLE t (x)")

    def bug(*_: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(store, "_run_entry", bug)
    with pytest.raises(store_module.StoreFailedError, match="simulated bug"):
        store.apply(entries(Command.new([S("INSERT INTO t VALUES (1)")]), start=2))
    monkeypatch.undo()
    # Not skipped, not retried: every later batch is refused the same way.
    with pytest.raises(store_module.StoreFailedError, match="entries 2-2"):
        store.apply(entries(Command.new([S("INSERT INTO t VALUES (2)")]), start=2))
    assert failures == [store.failure] and store.applied_index() == 1
    (count,) = store.query([S("SELECT count(*) FROM t")])
    assert isinstance(count, QueryResult) and count.values == [[0]]
    store.close()


def test_vacuum_alone_compacts_the_file_between_other_entries(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        fill = "INSERT INTO big SELECT randomblob(1000) FROM (WITH RECURSIVE c(x) AS "
        fill += "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) SELECT x FROM c)"
        store.apply(
            entries(
                Command.new([S("CREATE TABLE big (v)")]),
                Command.new([S(fill)]),
                Command.new([S("DELETE FROM big")]),
            )
        )
        pages = "SELECT page_count FROM pragma_page_count()"
        before = store._w.execute(pages).fetchone()[0]
        done = store.apply(
            entries(
                Command.new([S("INSERT INTO big VALUES ('before')")]),
                Command.new([S(" Vacuum; ")]),  # rqlite's: POST /db/execute ["VACUUM"]
                Command.new([S("INSERT INTO big VALUES ('a vacuum cleaner')")]),
                Command.new([S("VACUUM")], transaction=True),  # not alone: SQLite's error
                Command.new([S("VACUUM"), S("SELECT 1")]),
                start=4,
            )
        )
        assert [type(r[0]).__name__ for r in done] == [
            "ExecuteResult", "ExecuteResult", "ExecuteResult", "ErrorResult", "ErrorResult",
        ]  # fmt: skip
        assert "within a transaction" in done[3][0].error
        assert store.applied_index() == 8
        assert store._w.execute(pages).fetchone()[0] < before / 10
        (q,) = store.query([S("SELECT v FROM big ORDER BY rowid")])
        assert isinstance(q, QueryResult) and q.values == [["before"], ["a vacuum cleaner"]]
    finally:
        store.close()


def test_vacuum_is_told_from_its_command_on_the_proposer_and_with_parameters(
    tmp_path: Path,
) -> None:
    """The leader applies its own proposals without decoding them: a VACUUM it proposed
    runs alone there too; one with a parameter is SQLite's error on every replica."""
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        vacuum = Command.new([S("VACUUM")])
        with_param = Command.new([S("VACUUM", (1,))])
        batch = entries(Command.new([S("CREATE TABLE t (v)")]), vacuum, with_param)
        store.remember_proposal(batch[1].data, vacuum)
        store.remember_proposal(batch[2].data, with_param)
        done = store.apply(batch)
        assert [type(r[0]).__name__ for r in done] == [
            "ExecuteResult", "ExecuteResult", "ErrorResult",
        ]  # fmt: skip
        assert "within a transaction" not in done[2][0].error  # a bind error, not VACUUM's
        assert store.applied_index() == 3
    finally:
        store.close()
