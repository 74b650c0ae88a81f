"""The SQLite state machine behind FlareDB (implements ``raft.api.StateMachine``).

One SQLite file per node. Committed log entries are applied in log order, a whole batch
of entries in one SQLite transaction (one fsync), with the applied Raft index written in
that same transaction, so after a crash the file and its index always agree and the
engine replays exactly the entries after it. Reads use a second, read-only connection
that sees the last committed state (WAL mode), so they never wait for an apply.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from plasmacloud.common.sqlite_image import pin_image
from plasmacloud.flaredb.authorizer import RESERVED_PREFIX, Sentry, is_reserved
from plasmacloud.flaredb.command import LOAD, Command
from plasmacloud.flaredb.decltype import DeclaredTypes
from plasmacloud.flaredb.models import (
    ErrorResult,
    ExecuteResult,
    Params,
    QueryResult,
    RequestError,
    Result,
    Run,
    Statement,
)
from plasmacloud.flaredb.rqlite_types import types_and_values
from plasmacloud.flaredb.sqlscan import (
    NonDeterministicError,
    Token,
    check_query,
    tokenize,
)
from plasmacloud.raft.api import Entry

log = logging.getLogger(__name__)

META_TABLE = f"{RESERVED_PREFIX}meta"
# Work limit of one replicated statement, in SQLite VM steps (~3-7 s on this machine).
# Counted, not timed, so every replica interrupts the same statement at the same point
# and they stay identical; without it one endless statement would hang every node.
WORK_LIMIT_STEPS = 100_000_000
_PROGRESS_EVERY = 1000
# WAL size past which the checkpointer thread copies it into the database file; the WAL is
# cut back to this size when it starts over. (SQLite's automatic checkpoint, which runs
# inside the commit that crosses 1000 pages, is off: see _Checkpointer.)
CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreFailedError(Exception):
    """Applying committed entries raised something no statement result could stand for
    (a bug, a full disk): the store stops applying for good, as the node must."""


class _TransactionLost(Exception):
    """A statement ended the batch transaction (``INSERT OR ROLLBACK``, ``RAISE(ROLLBACK)``,
    or an interrupted write, which SQLite rolls back whole); the message says which."""


@functools.lru_cache(maxsize=256)
def _inserts(sql: str) -> bool:
    # Cached: a bulk request repeats one INSERT text thousands of times.
    return sql.lstrip().upper().startswith(("INSERT", "REPLACE"))


@functools.lru_cache(maxsize=256)
def _alters(sql: str) -> bool:
    return sql.lstrip().upper().startswith("ALTER")


_SQL_ERRORS = (sqlite3.Error, OverflowError, ValueError)
# a request that is VACUUM alone (rqlite's way to compact the file: POST /db/execute)
_VACUUM = re.compile(r"\s*vacuum\s*;?\s*", re.IGNORECASE)
# A write on the read connection (PRAGMA query_only), and what rqlite says instead.
_READ_ONLY = "attempt to write a readonly database"
_RQLITE_READ_ONLY = "attempt to change database via query operation"
_MAX_ROWID = 2**63 - 1
_CLOSING_QUOTE = {'"': '"', "`": "`", "[": "]"}


def _identifier(t: Token) -> str | None:
    if t.kind == "word":
        return t.text
    if t.kind == "quoted" and len(t.text) > 1 and t.text[-1] == _CLOSING_QUOTE[t.text[0]]:
        quote = t.text[0]
        return t.text[1:-1] if quote == "[" else t.text[1:-1].replace(quote * 2, quote)
    return None


@functools.lru_cache(maxsize=256)
def _plain_insert(sql: str) -> tuple[str, tuple[str, ...]] | None:
    """``(table, columns)`` if ``sql`` is ``INSERT INTO table (columns) VALUES (...)``
    and nothing else (one VALUES row, no OR/UPSERT/RETURNING/schema prefix): every
    execution inserts exactly one row or fails. None for any other statement."""
    code = [t for t in tokenize(sql) if t.kind not in ("space", "comment")]
    while code and code[-1].text == ";":
        code.pop()
    if len(code) < 8 or [t.text.upper() for t in code[:2]] != ["INSERT", "INTO"]:
        return None
    table = _identifier(code[2])
    if table is None or code[3].text != "(":
        return None
    columns = []
    i = 4
    while i + 1 < len(code):
        name = _identifier(code[i])
        if name is None or code[i + 1].text not in (",", ")"):
            return None
        columns.append(name)
        i += 2
        if code[i - 1].text == ")":
            break
    else:
        return None
    if i + 1 >= len(code) or code[i].text.upper() != "VALUES" or code[i + 1].text != "(":
        return None
    depth = 0
    for j in range(i + 1, len(code)):
        depth += {"(": 1, ")": -1}.get(code[j].text, 0)
        if depth == 0:
            return (table, tuple(columns)) if j == len(code) - 1 else None
    return None


# A log entry with its command as decoded (or why it could not be).
_Decoded = tuple[Entry, Command | RequestError]


def _is_vacuum(cmd: Command | RequestError) -> bool:
    """True for an entry that is a request of VACUUM alone (run outside the batch)."""
    if not isinstance(cmd, Command) or cmd.kind == LOAD or cmd.transaction or len(cmd) != 1:
        return False
    (run,) = (r for r in cmd.runs if r.params)
    return not run.params[0] and _VACUUM.fullmatch(run.sql) is not None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows_result(cur: sqlite3.Cursor, start: float, declared: Sequence[str]) -> QueryResult:
    """The rows of ``cur`` as rqlite reports them, given its columns' declared types."""
    columns = [d[0] for d in cur.description]
    types, values = types_and_values(declared, cur.fetchall())
    result = QueryResult(columns, types, values)
    result.time = time.perf_counter() - start
    return result


def _execute(
    conn: sqlite3.Connection, stmt: Statement, sentry: Sentry, declared: DeclaredTypes
) -> Result:
    """Run one statement; SQLite errors (refusals of ``sentry``, the connection's
    authorizer, included) become an :class:`ErrorResult`."""
    start = time.perf_counter()
    try:
        cur = conn.execute(stmt.sql, stmt.params)
        if cur.description is not None:
            return _rows_result(cur, start, declared.of(stmt.sql, len(cur.description)))
        rows = max(cur.rowcount, 0)
        # lastrowid is the connection's, so only trust it right after a row was inserted.
        inserted = rows and _inserts(stmt.sql)
        result: Result = ExecuteResult(int(cur.lastrowid or 0) if inserted else 0, rows)
    except _SQL_ERRORS as exc:
        result = ErrorResult(sentry.explain(str(exc)))
    result.time = time.perf_counter() - start
    return result


class _Checkpointer:
    """Copies the WAL into the database file from a thread and a connection of its own.

    SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so
    about every other bulk insert's apply (on the event loop) also copied megabytes and
    waited for two fsyncs (~10-15 ms of a 10,000-row insert). Here the commit only
    appends to the WAL and this thread does the copying; a PASSIVE checkpoint never
    blocks the writer or readers, and SQLite releases the GIL while it works.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()  # a kick and the end of a checkpoint do not interleave
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._loop, name=f"flaredb-checkpoint-{path.name}", daemon=True
        )
        self._thread.start()

    def kick(self) -> None:
        """Ask for a checkpoint (several requests before it starts make one)."""
        with self._lock:
            self._idle.clear()
            self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """True once no checkpoint is asked for or running (tests)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            while not self._stopping:
                self._wake.wait()
                with self._lock:
                    self._wake.clear()
                if self._stopping:
                    break
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or I/O: the next kick tries again
                    log.warning("checkpoint of %s failed: %s", self._path, exc)
                with self._lock:
                    if not self._wake.is_set():
                        self._idle.set()
        finally:
            conn.close()
            self._idle.set()


class SQLiteStore:
    """SQLite database of one node: applies log entries, answers local reads."""

    def __init__(
        self,
        path: Path,
        on_apply: Callable[[int], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        """Open (or create) the database at ``path``.

        ``on_apply(statements)`` is called after each applied batch (metrics);
        ``on_failure(reason)`` once, if applying ever raises (see :meth:`apply`).
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._on_apply = on_apply
        self._on_failure = on_failure
        # Why applying stopped for good (None while the store follows the log).
        self.failure: str | None = None
        self._rng = random.Random(0)
        self._w = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._w.execute("PRAGMA journal_mode=WAL")
        # NORMAL: commits do not fsync (only checkpoints do), which keeps fsyncs off the
        # event loop that applies entries. Safe because the Raft log is the durable record:
        # after a power cut the file may be a few commits behind but never corrupt, its
        # applied index says exactly how far, and the engine replays the log from there or
        # restores its own (fsynced) snapshot when the file is behind that snapshot.
        self._w.execute("PRAGMA synchronous=NORMAL")
        self._w.execute("PRAGMA wal_autocheckpoint=0")
        # The WAL restarts from its beginning after a complete checkpoint; truncated then,
        # its size says how much has been written since (what _maybe_checkpoint reads).
        self._w.execute(f"PRAGMA journal_size_limit={CHECKPOINT_WAL_BYTES}")
        self._wal = Path(f"{path}-wal")
        # Node-dependent functions are replaced by ones seeded from the log entry.
        self._w.create_function("random", 0, self._random)
        self._w.create_function("randomblob", 1, self._randomblob)
        self._steps = 0
        self._w.set_progress_handler(self._count_steps, _PROGRESS_EVERY)
        self._w.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (k TEXT PRIMARY KEY, v INTEGER)")
        self._w.execute(f"INSERT OR IGNORE INTO {META_TABLE} VALUES ('applied_index', 0)")
        # Client statements run under an authorizer that refuses FlareDB's own names (and,
        # when applying, whatever would break the batch transaction): on the read
        # connection always (only the dump turns it off), on the write connection only
        # while an entry's statements run (see _client_sql).
        self._w_sentry = Sentry(write=True)
        self._r_sentry = Sentry(write=False)
        self._r = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._r.execute("PRAGMA query_only=ON")
        self._r.set_authorizer(self._r_sentry)
        self._w_types = DeclaredTypes(self._w, path)
        self._r_types = DeclaredTypes(self._r, path)
        self._applied = self._read_applied()
        self._checkpointer = _Checkpointer(path)
        # Commands this node proposed, by the identity of their entry's bytes (kept
        # alive here, so the id is not reused); see remember_proposal.
        self._proposed: dict[int, tuple[bytes, Command]] = {}

    def close(self) -> None:
        self._checkpointer.close()
        self._r.close()
        self._w.close()

    def remember_proposal(self, data: bytes, cmd: Command) -> None:
        """Note that ``data`` is ``cmd`` encoded, while this node proposes it: when the
        engine hands the same bytes object back to apply, the entry is not decoded again
        (the leader's copy of a bulk insert). ``Command.decode(data)`` must equal ``cmd``,
        which holds for every command of parsed requests (JSON values only: the entry
        round trip is tested). Call :meth:`forget_proposal` once the proposal is over."""
        self._proposed[id(data)] = (data, cmd)

    def forget_proposal(self, data: bytes) -> None:
        """Drop what :meth:`remember_proposal` kept (applied or not)."""
        self._proposed.pop(id(data), None)

    def _decode(self, entry: Entry) -> Command | RequestError:
        """The entry's command, or why it cannot be read (the entry's one result then)."""
        data = entry.data
        known = self._proposed.pop(id(data), None)
        if known is not None and known[0] is data:
            return known[1]
        try:
            return Command.decode(data)
        except RequestError as exc:
            log.error("entry %d: %s", entry.index, exc)
            return exc

    def _maybe_checkpoint(self) -> None:
        try:
            size = self._wal.stat().st_size
        except OSError:
            return
        if size > CHECKPOINT_WAL_BYTES:
            self._checkpointer.kick()

    # -- node-dependent functions made deterministic ------------------------------------

    def _random(self) -> int:
        return self._rng.randint(-(2**63), 2**63 - 1)

    def _randomblob(self, n: Any) -> bytes:
        try:
            size = max(int(n), 1)
        except (TypeError, ValueError):
            size = 1
        return self._rng.randbytes(min(size, 1 << 24))

    def _count_steps(self) -> int:
        self._steps += _PROGRESS_EVERY
        return int(self._steps > WORK_LIMIT_STEPS)

    # -- StateMachine ----------------------------------------------------------------

    def _read_applied(self) -> int:
        row = self._w.execute(f"SELECT v FROM {META_TABLE} WHERE k='applied_index'").fetchone()
        return int(row[0]) if row else 0

    def applied_index(self) -> int:
        """Index of the last entry committed to the SQLite file."""
        return self._applied

    def apply(self, entries: Sequence[Entry]) -> list[Any]:
        """Apply committed entries: one SQLite transaction for the whole batch.

        Every statement's outcome, errors included, is a result, the same on every
        replica. Anything else that raises (a bug, a failing disk) leaves the batch
        rolled back, marks the store failed, tells ``on_failure`` and raises
        :class:`StoreFailedError`, now and on every later call: a replica that skipped
        the entry would differ from the others for good, and one that retried it would
        fail again on every tick with writes hanging behind it.
        """
        if self.failure is not None:
            raise StoreFailedError(self.failure)
        if not entries:
            return []
        try:
            return self._apply_entries(entries)
        except Exception as exc:
            self.failure = (
                f"applying log entries {entries[0].index}-{entries[-1].index} failed: "
                f"{type(exc).__name__}: {exc}"
            )
            log.critical("%s; this node stops applying the log", self.failure, exc_info=True)
            if self._on_failure is not None:
                self._on_failure(self.failure)
            raise StoreFailedError(self.failure) from exc

    def _apply_entries(self, entries: Sequence[Entry]) -> list[Any]:
        # Each entry is decoded once, here: the VACUUM check reads the command (a search
        # of a bulk entry's megabytes for the word cost ~13 ms on every replica), and a
        # batch applied again entry by entry (see _apply_grouped) reuses it.
        decoded = [(entry, self._decode(entry)) for entry in entries]
        results: list[Any] = []
        start = 0
        for i, (entry, cmd) in enumerate(decoded):
            if _is_vacuum(cmd):
                results += self._apply_grouped(decoded[start:i])
                results.append(self._vacuum(entry))
                start = i + 1
        results += self._apply_grouped(decoded[start:])
        self._maybe_checkpoint()
        if self._on_apply is not None:
            count = sum(len(r) for r in results if isinstance(r, list))
            self._on_apply(count)
        return results

    def _vacuum(self, entry: Entry) -> list[Result]:
        """VACUUM cannot run inside the batch's transaction: it runs alone, then the
        applied index moves past it. In that order: a crash between the two runs it again
        on replay (harmless), where the other order could skip it on one replica only,
        and VACUUM may renumber the rowids of tables without an INTEGER PRIMARY KEY."""
        started = time.perf_counter()
        try:
            self._w.execute("VACUUM")  # the store's own text: no client authorizer
            result: Result = ExecuteResult(0, 0, time.perf_counter() - started)
        except sqlite3.Error as exc:
            result = ErrorResult(str(exc), time.perf_counter() - started)
        self._commit_index(entry.index)
        return [result]

    def _apply_grouped(self, entries: Sequence[_Decoded]) -> list[Any]:
        if not entries:
            return []
        try:
            results = self._apply_batch(entries)
        except _TransactionLost:
            # Same outcome as if each entry had been its own transaction, which is what
            # a batch means; so replicas agree whatever their batch boundaries were.
            results = []
            for decoded in entries:
                try:
                    results.extend(self._apply_batch([decoded]))
                except _TransactionLost as exc:
                    results.append([ErrorResult(f"{exc}; the whole request was rolled back")])
                    self._commit_index(decoded[0].index)
        return results

    def _commit_index(self, index: int) -> None:
        self._w.execute(f"UPDATE {META_TABLE} SET v=? WHERE k='applied_index'", (index,))
        self._applied = index

    def _apply_batch(self, entries: Sequence[_Decoded]) -> list[Any]:
        conn = self._w
        last = entries[-1][0].index
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [self._apply_entry(cmd) for _, cmd in entries]
            conn.execute(f"UPDATE {META_TABLE} SET v=? WHERE k='applied_index'", (last,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._applied = last
        return results

    @contextlib.contextmanager
    def _client_sql(self) -> Iterator[None]:
        """Run the block with the write connection's authorizer on. Setting or clearing
        an authorizer also expires the connection's prepared statements, so a client
        statement whose text equals one of the store's own is compiled, and checked,
        again rather than taken from the statement cache."""
        self._w.set_authorizer(self._w_sentry)
        try:
            yield
        finally:
            self._w.set_authorizer(None)

    @contextlib.contextmanager
    def _own_sql(self) -> Iterator[None]:
        """Inside :meth:`_client_sql`: run the store's own statements (savepoints,
        schema lookups) with the authorizer off."""
        self._w.set_authorizer(None)
        try:
            yield
        finally:
            self._w.set_authorizer(self._w_sentry)

    def _apply_entry(self, cmd: Command | RequestError) -> list[Result]:
        if isinstance(cmd, RequestError):
            return [ErrorResult(str(cmd))]
        self._rng.seed(cmd.seed)
        conn = self._w
        conn.execute("SAVEPOINT entry")
        runs = cmd.runs
        if cmd.kind == LOAD:
            # Inside the entry's savepoint: a load that fails leaves the old tables be.
            self._steps = 0
            self._drop_user_objects()
        with self._client_sql():
            results = self._run_entry(cmd, runs)
        conn.execute("RELEASE entry")
        return results

    def _run_entry(self, cmd: Command, runs: Sequence[Run]) -> list[Result]:
        if cmd.transaction or cmd.kind == LOAD:
            results = self._run(runs, transaction=True)
        else:
            # Optimistic: without a savepoint per statement (two extra SQLite calls each,
            # most of a bulk insert's apply time). Only a failed statement needs its own
            # savepoint (so its partial effects, e.g. INSERT OR FAIL, are undone), so on
            # any error the entry is undone and run again the careful way, with the
            # random() generator back where it was: the same outcome on every replica.
            results = self._run(runs, transaction=False, savepoints=False)
            if any(isinstance(r, ErrorResult) for r in results):
                with self._own_sql():
                    self._w.execute("ROLLBACK TO entry")
                self._rng.seed(cmd.seed)
                results = self._run(runs, transaction=False)
        return results

    def _run(self, runs: Sequence[Run], transaction: bool, savepoints: bool = True) -> list[Result]:
        """Run an entry's statements inside its savepoint ``entry``.

        ``transaction``: all or nothing, stop at the first error. Otherwise each statement
        stands alone; ``savepoints=False`` skips undoing a failed one (the caller undoes
        the whole entry instead).
        """
        results: list[Result] = []
        for run in runs:
            if savepoints and not transaction:
                self._run_careful(run, results)
            elif self._run_fast(run, results):
                if transaction:
                    # All or nothing: undo the statements before it, skip the rest.
                    with self._own_sql():
                        self._w.execute("ROLLBACK TO entry")
                break  # without savepoints the caller undoes and reruns the whole entry
        return results

    def _run_fast(self, run: Run, results: list[Result]) -> bool:
        """Run the statements of ``run``, without savepoints, until one fails; True if one
        did. The hot loop of a bulk insert: one cursor and one prepared statement for the
        run, no object per statement but its result."""
        conn = self._w
        sql = run.sql
        plain = _plain_insert(sql) if len(run.params) > 1 else None
        if plain is not None:
            with self._own_sql():
                many = self._many_rows_ok(*plain)
            if many and self._run_many(run, plain[0], results):
                return False
        inserts = _inserts(sql)
        alters = _alters(sql)
        cur = conn.cursor()
        execute = cur.execute
        clock = time.perf_counter
        append = results.append
        start = clock()  # one clock reading per statement: its end is the next one's start
        declared: Sequence[str] | None = None
        for params in run.params:
            self._steps = 0
            try:
                execute(sql, params)
                if not conn.in_transaction:
                    raise _TransactionLost("a statement ended the transaction")
                if alters and (reserved := self._reserved_rename()) is not None:
                    append(ErrorResult(reserved, clock() - start))
                    return True
                if cur.description is None:
                    rows = cur.rowcount
                    # lastrowid is the connection's: only trust it right after a row was
                    # inserted.
                    last = cur.lastrowid if rows > 0 and inserts else 0
                    end = clock()
                    append(ExecuteResult(last or 0, rows if rows > 0 else 0, end - start))
                else:
                    # One SQL text, one schema: its declared types are asked once. Rows
                    # are read here, and reading them can fail too (an overflow in the
                    # third row, text that is not UTF-8).
                    if declared is None:
                        declared = self._w_types.of(sql, len(cur.description))
                    append(_rows_result(cur, start, declared))
                    end = clock()
            except _SQL_ERRORS as exc:
                append(self._failed(exc, start))
                return True
            start = end
        return False

    def _many_rows_ok(self, table: str, columns: tuple[str, ...]) -> bool:
        """True if a plain INSERT into ``table`` gives each row the rowid one above the
        previous row's: an ordinary rowid table, no triggers that could insert in between,
        no REPLACE conflict clause, no temp objects that could shadow it, and no column
        list naming the rowid (its INTEGER PRIMARY KEY or any primary key, to be safe)."""
        conn = self._w
        if conn.execute("SELECT 1 FROM sqlite_temp_master LIMIT 1").fetchone():
            return False
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
            (table,),
        ).fetchone()
        if row is None or not row[0]:
            return False
        ddl = row[0].upper()
        # ON CONFLICT REPLACE in the schema: a row replacing the table's last one takes
        # its rowid again. (IGNORE shows in the row count, ABORT and the like as errors.)
        if ddl.startswith("CREATE VIRTUAL") or "WITHOUT" in ddl or "REPLACE" in ddl:
            return False
        trigger = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE",
            (table,),
        ).fetchone()
        if trigger is not None:
            return False
        keys = {r[1].lower() for r in conn.execute(f"PRAGMA table_info({_quote(table)})") if r[5]}
        named = {c.lower() for c in columns}
        return not named & (keys | {"rowid", "oid", "_rowid_"})

    def _each_statement(self, params: Sequence[Params]) -> Iterator[Params]:
        # executemany asks for each row's parameters just before running it: the work
        # limit stays per statement, as in the loop.
        for p in params:
            self._steps = 0
            yield p

    def _run_many(self, run: Run, table: str, results: list[Result]) -> bool:
        """A run of a plain INSERT through one ``executemany``; False, with nothing
        applied and random() where it was, if it failed (the loop then reruns it and
        reports the failing row). Each row's counters are exact without asking SQLite
        per row: a plain INSERT changes one row, and into a table :meth:`_many_rows_ok`
        accepted each new rowid is the previous one plus one, up to the last one."""
        conn = self._w
        n = len(run.params)
        (top,) = conn.execute(f"SELECT max(rowid) FROM {_quote(table)}").fetchone()
        if top is not None and top > _MAX_ROWID - n:
            return False  # near the top SQLite picks random rowids
        state = self._rng.getstate()
        with self._own_sql():
            conn.execute("SAVEPOINT run")
        start = time.perf_counter()
        try:
            cur = conn.executemany(run.sql, self._each_statement(run.params))
            done = cur.rowcount == n
        except _SQL_ERRORS as exc:
            if not conn.in_transaction:
                self._failed(exc, start)  # raises: the loop would have lost it the same way
            done = False
        if not conn.in_transaction:
            raise _TransactionLost("a statement ended the transaction")
        with self._own_sql():
            if not done:
                conn.execute("ROLLBACK TO run")
                conn.execute("RELEASE run")
                self._rng.setstate(state)
                return False
            (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
            conn.execute("RELEASE run")
        each = (time.perf_counter() - start) / n
        results.extend([ExecuteResult(rowid, 1, each) for rowid in range(last - n + 1, last + 1)])
        return True

    def _run_careful(self, run: Run, results: list[Result]) -> None:
        """Run ``run`` with a savepoint per statement, so a failed one is undone alone and
        the others stand."""
        conn = self._w
        for stmt in run.statements():
            with self._own_sql():
                conn.execute("SAVEPOINT stmt")
            self._steps = 0
            start = time.perf_counter()
            result = _execute(conn, stmt, self._w_sentry, self._w_types)
            if not isinstance(result, ErrorResult) and _alters(stmt.sql):
                reserved = self._reserved_rename()
                result = result if reserved is None else ErrorResult(reserved)
            with self._own_sql():
                if isinstance(result, ErrorResult):
                    result = self._failed(result.error, start)
                    conn.execute("ROLLBACK TO stmt")
                elif not conn.in_transaction:
                    raise _TransactionLost("a statement ended the transaction")
                results.append(result)
                conn.execute("RELEASE stmt")

    def _reserved_rename(self) -> str | None:
        """Why the ALTER just run must be undone, if it renamed a table into the reserved
        prefix: SQLite asks the authorizer about the old name only."""
        for (name,) in self._w.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            if is_reserved(name) and name != META_TABLE:
                return f"{name} is reserved for FlareDB's own bookkeeping"
        return None

    def _failed(self, exc: BaseException | str, start: float) -> ErrorResult:
        """The result of a failed statement; raises if it ended the batch transaction."""
        message = self._w_sentry.explain(str(exc))
        if message == "interrupted":
            message = (
                f"interrupted: the statement exceeded FlareDB's work limit of "
                f"{WORK_LIMIT_STEPS:,} SQLite steps (the same on every replica)"
            )
        if not self._w.in_transaction:
            raise _TransactionLost(message)
        return ErrorResult(message, time.perf_counter() - start)

    def _drop_user_objects(self) -> None:
        rows = self._w.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table','view') "
            "AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for kind, name in rows:
            if not is_reserved(name):
                self._w.execute(f"DROP {kind.upper()} IF EXISTS {_quote(name)}")
        if self._w.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchone():
            self._w.execute("DELETE FROM sqlite_sequence")

    def snapshot(self) -> bytes:
        """The whole database file (applied index included) as bytes."""
        return bytes(self._w.serialize())

    def snapshot_reader(self) -> Callable[[], bytes]:
        # every apply commits before it returns: the file's last commit is the applied state
        return pin_image(self.path)

    def restore(self, data: bytes, index: int) -> None:
        """Replace the database with a snapshot taken at ``index`` (SQLite backup API)."""
        image = bytearray(data)
        if image[18:20] == b"\x02\x02":
            # A WAL-mode header; an in-memory copy can only be opened in rollback mode.
            image[18:20] = b"\x01\x01"
        src = sqlite3.connect(":memory:")
        try:
            src.deserialize(bytes(image))
            src.backup(self._w)
        finally:
            src.close()
        self._w.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (k TEXT PRIMARY KEY, v INTEGER)")
        self._w.execute(
            f"INSERT OR REPLACE INTO {META_TABLE} VALUES ('applied_index', ?)", (index,)
        )
        self._applied = index

    # -- local reads -------------------------------------------------------------------

    def query(self, statements: Sequence[Statement], timeout: float | None = None) -> list[Result]:
        """Run read statements on the read-only connection (no replication).

        A transaction the statements open (``BEGIN ...; SELECT ...``: several reads from
        one state) is ended before returning, so each call reads the latest commit.
        Safe to call from one worker thread while the event loop applies entries (SQLite
        releases the GIL while it works). A statement still running after ``timeout``
        seconds is interrupted and answers "interrupted".
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if deadline is not None:
            # Called every 10k VM steps: cheap, and a runaway query stops soon after.
            self._r.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            results: list[Result] = []
            for stmt in statements:
                try:
                    check_query(stmt.sql)
                except NonDeterministicError as exc:
                    results.append(ErrorResult(str(exc)))
                    continue
                result = _execute(self._r, stmt, self._r_sentry, self._r_types)
                if isinstance(result, ErrorResult) and result.error == _READ_ONLY:
                    result = ErrorResult(_RQLITE_READ_ONLY, result.time)  # rqlite's words
                results.append(result)
            return results
        finally:
            if deadline is not None:
                self._r.set_progress_handler(None, 0)
            if self._r.in_transaction:
                # A client's BEGIN or SAVEPOINT ends with its request: an open read
                # transaction pins this connection's snapshot, and every later read on
                # the node, linearizable ones after their read barrier included, would
                # keep answering from that old state.
                self._r.execute("ROLLBACK")

    # -- backup / load -----------------------------------------------------------------

    def dump_sql(self) -> list[str]:
        """SQL text of the user's tables (FlareDB's own bookkeeping left out), all of
        them as of one applied batch."""
        # iterdump reads table by table, each in its own autocommit read, so a batch
        # committed meanwhile (the event loop applies while the reader thread dumps)
        # would land in some tables of the dump and not others: e.g. rows without the
        # audit rows their trigger wrote. One read transaction pins one state, and is
        # always ended here (not left to a half-consumed generator), so the reader
        # connection never keeps serving an old snapshot to later queries. The dump is
        # the store's own reading (the authorizer would refuse its reads of our table),
        # and only our table can have a reserved name: the authorizer refuses any other.
        self._r.set_authorizer(None)
        self._r.execute("BEGIN")
        try:
            return [
                line + "\n"
                for line in self._r.iterdump()
                if META_TABLE not in line.split("(", 1)[0]
            ]
        finally:
            self._r.execute("COMMIT")
            self._r.set_authorizer(self._r_sentry)

    def backup_file(self) -> bytes:
        """A consistent copy of the database file without FlareDB's bookkeeping (the
        backup API copies every page in one read, past the authorizer)."""
        with contextlib.closing(sqlite3.connect(":memory:")) as mem:
            self._r.backup(mem)
            _drop_reserved(mem)
            return bytes(mem.serialize())

    def size_bytes(self) -> int:
        """Size of the database file plus its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += Path(str(self.path) + suffix).stat().st_size
        return total


def load_statements(data: bytes) -> list[Statement]:
    """Turn a /db/load body (a SQLite file or a SQL dump) into the statements to replay.

    A file is checked and dumped on the node that received it, so the log entry holds
    plain SQL that every replica applies the same way.
    """
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "load.db"
        if data.startswith(_SQLITE_MAGIC):
            src.write_bytes(data)
            conn = sqlite3.connect(src)
        else:
            try:
                script = data.decode()
            except UnicodeDecodeError as exc:
                raise RequestError("body is neither a SQLite file nor UTF-8 SQL text") from exc
            conn = sqlite3.connect(":memory:")
            try:
                conn.executescript(script)
            except sqlite3.Error as exc:
                conn.close()
                raise RequestError(f"SQL dump does not run: {exc}") from exc
        with contextlib.closing(conn):
            try:
                check = conn.execute("PRAGMA integrity_check").fetchone()
                if check is None or check[0] != "ok":
                    raise RequestError(f"database file fails integrity_check: {check}")
                # A FlareDB backup has none, but a file copied off a node's disk
                # would bring its applied index along.
                _drop_reserved(conn)
                lines = list(conn.iterdump())
            except sqlite3.DatabaseError as exc:
                raise RequestError(f"not a usable SQLite database: {exc}") from exc
    skip = ("BEGIN TRANSACTION;", "COMMIT;")
    return [Statement(line) for line in lines if line not in skip]


def _drop_reserved(conn: sqlite3.Connection) -> None:
    """Drop the tables named with FlareDB's reserved prefix (any case) from a copy."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for name in names:
        if is_reserved(name):
            conn.execute(f"DROP TABLE {_quote(name)}")
