"""Chainfire's MVCC key-value state machine, stored in SQLite.

Every committed write gets a main revision (all changes of one Put, DeleteRange, Txn or
lease revoke share it; ``sub`` orders changes inside it). Two tables hold the data:

* ``cur``  — the live keys (fast current reads, lease attachment);
* ``hist`` — every change ever made and not yet compacted (historic reads, watch
  replay); a row with ``version = 0`` is a deletion tombstone.

A third, ``sys``, is the system keyspace (:mod:`plasmacloud.chainfire.system`): written
only by its own commands, outside the revisions, history and watch events above.

The engine hands :meth:`MvccStore.apply` batches of committed entries; each batch is one
SQLite transaction that also records the applied index, so after a crash the store
knows exactly which entries it already holds. Results are the etcd response messages
(or :class:`~plasmacloud.chainfire.errors.EtcdError` instances, which are deterministic
outcomes, not failures of the machine). Semantics follow etcd 3.4's ``etcdserver/apply.go``
and ``mvcc/kvstore_txn.go``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plasmacloud.chainfire import errors, system
from plasmacloud.chainfire.commands import CommandError, Op, decode
from plasmacloud.chainfire.leases import MAX_TTL, MIN_TTL, LeaseTimers
from plasmacloud.chainfire.proto import kv_pb2, rpc_pb2, system_pb2
from plasmacloud.chainfire.wal import WalCheckpointer
from plasmacloud.common.keyrange import prefix_end
from plasmacloud.common.sqlite_image import pin_image, standalone
from plasmacloud.raft.api import Entry

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cur(
  key BLOB PRIMARY KEY, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL,
  version INTEGER NOT NULL, value BLOB NOT NULL, lease INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cur_lease ON cur(lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS hist(
  rev INTEGER NOT NULL, sub INTEGER NOT NULL, key BLOB NOT NULL, create_rev INTEGER NOT NULL,
  version INTEGER NOT NULL, value BLOB NOT NULL, lease INTEGER NOT NULL,
  PRIMARY KEY(rev, sub)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hist_key ON hist(key, rev);
CREATE TABLE IF NOT EXISTS lease(id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alarm(
  member_id INTEGER NOT NULL, alarm INTEGER NOT NULL, PRIMARY KEY(member_id, alarm));
"""

_CUR_COLS = "key, create_rev, mod_rev, version, value, lease"
_Row = tuple[bytes, int, int, int, bytes, int]

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE


class WatchEvent:
    """One change, as watchers see it: its revision, key, kind, and the rows behind it.

    etcd's Event message is only built when a watcher takes the change (most writes have
    no watcher), then reused for every other watcher of it.
    """

    __slots__ = ("_event", "is_put", "key", "prev", "revision", "row")

    def __init__(self, revision: int, key: bytes, row: _Row | None, prev: _Row | None) -> None:
        self.revision = revision
        self.key = key
        self.row = row  # the new KeyValue row of a put; None for a deletion
        self.prev = prev  # the KeyValue row before the change, if known
        self.is_put = row is not None
        self._event: kv_pb2.Event | None = None

    @property
    def event(self) -> kv_pb2.Event:
        """etcd's Event (with prev_kv when known); callers must not modify it."""
        if self._event is None:
            if self.row is not None:
                ev = kv_pb2.Event(type=PUT, kv=_kv(self.row))
            else:
                ev = kv_pb2.Event(
                    type=DELETE, kv=kv_pb2.KeyValue(key=self.key, mod_revision=self.revision)
                )
            if self.prev is not None:
                ev.prev_kv.CopyFrom(_kv(self.prev))
            self._event = ev
        return self._event

    def __repr__(self) -> str:
        return f"WatchEvent({self.revision}, {self.key!r}, {'PUT' if self.is_put else 'DELETE'})"


EventListener = Callable[[list[WatchEvent]], None]


def _kv(row: _Row) -> kv_pb2.KeyValue:
    key, create_rev, mod_rev, version, value, lease = row
    return kv_pb2.KeyValue(
        key=key,
        create_revision=create_rev,
        mod_revision=mod_rev,
        version=version,
        value=value,
        lease=lease,
    )


def key_clause(key: bytes, range_end: bytes, column: str = "key") -> tuple[str, tuple[bytes, ...]]:
    """SQL condition for etcd's (key, range_end): one key, ``[key, end)``, or ``>= key``.

    ``range_end == b"\\0"`` means every key >= key (etcd's ``mkGteRange``).
    """
    if not range_end:
        return f"{column} = ?", (key,)
    if range_end == b"\0":
        return f"{column} >= ?", (key,)
    return f"{column} >= ? AND {column} < ?", (key, range_end)


class _Mishandled(Exception):
    """An entry raised something unexpected while applying without savepoints."""


@dataclass(slots=True)
class _Write:
    """The write in progress for one log entry: its revision and what it changed."""

    rev: int
    sub: int = 0
    events: list[WatchEvent] = field(default_factory=list)


@dataclass(slots=True)
class _Decision:
    """Which branch a (nested) Txn takes, decided on the pre-transaction state like etcd."""

    succeeded: bool
    children: list[_Decision]


_SORT_KEYS: dict[int, Callable[[kv_pb2.KeyValue], Any]] = {
    rpc_pb2.RangeRequest.KEY: lambda kv: kv.key,
    rpc_pb2.RangeRequest.VERSION: lambda kv: kv.version,
    rpc_pb2.RangeRequest.CREATE: lambda kv: kv.create_revision,
    rpc_pb2.RangeRequest.MOD: lambda kv: kv.mod_revision,
    rpc_pb2.RangeRequest.VALUE: lambda kv: kv.value,
}


class MvccStore:
    """The state machine (implements ``plasmacloud.raft.api.StateMachine``).

    Thread-safe: the engine may call :meth:`apply` from another thread than the one
    serving reads, so every access to the database holds one lock.
    """

    def __init__(self, path: Path | str, timers: LeaseTimers | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timers = timers if timers is not None else LeaseTimers()
        self._lock = threading.RLock()
        self._listeners: list[EventListener] = []
        self._restore_listeners: list[Callable[[], None]] = []
        self._db = self._open()
        self._checkpointer = WalCheckpointer(self.path)
        self._load()

    # -- lifecycle -------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # checkpoints (and their fsync) run on WalCheckpointer's thread, not in a COMMIT
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.executescript(_SCHEMA + system.SCHEMA)
        return db

    def _load(self) -> None:
        self._reload_meta()
        self._reload_memory()
        self.timers.reset(self._leases)

    def _reload_meta(self) -> None:
        """Re-read the applied index and revisions from the database."""
        meta = dict(self._db.execute("SELECT k, v FROM meta").fetchall())
        self._applied = int(meta.get("applied_index", 0))
        self._rev = int(meta.get("revision", 1))
        # -1 until the first compaction, like etcd (so compacting at 0 succeeds once)
        self._compact_rev = int(meta.get("compact_revision", -1))

    def _reload_memory(self) -> None:
        """Re-read the in-memory copies of lease and alarm state from the database."""
        self._leases: dict[int, int] = dict(self._db.execute("SELECT id, ttl FROM lease"))
        self._nospace = self._nospace_raised()

    def _nospace_raised(self) -> bool:
        return bool(
            self._db.execute("SELECT 1 FROM alarm WHERE alarm = ?", (rpc_pb2.NOSPACE,)).fetchone()
        )

    def close(self) -> None:
        """Close the database (the store is unusable afterwards)."""
        self._checkpointer.stop()
        with self._lock:
            self._db.close()

    def add_listener(self, listener: EventListener) -> None:
        """Call ``listener(events)`` after every committed batch that changed keys.

        It runs with the store locked, so it must only queue work (never block).
        """
        self._listeners.append(listener)

    def add_restore_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (store locked) after a snapshot replaced the whole state."""
        self._restore_listeners.append(listener)

    # -- read-only views -----------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
        """Held while applying; hold it to read history and subscribe atomically."""
        return self._lock

    @property
    def revision(self) -> int:
        """The current (latest committed) revision; 1 on an empty store, like etcd."""
        return self._rev

    @property
    def compact_revision(self) -> int:
        return self._compact_rev

    def applied_index(self) -> int:
        return self._applied

    def leases(self) -> dict[int, int]:
        """Every live lease: id -> granted TTL."""
        with self._lock:
            return dict(self._leases)

    def lease_keys(self, lease_id: int) -> list[bytes]:
        """Keys attached to a lease, sorted."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM cur WHERE lease = ? ORDER BY key", (lease_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def alarms(self) -> list[rpc_pb2.AlarmMember]:
        """Active alarms (member id, alarm type)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT member_id, alarm FROM alarm ORDER BY member_id, alarm"
            ).fetchall()
        return [rpc_pb2.AlarmMember(memberID=m, alarm=a) for m, a in rows]

    @property
    def nospace(self) -> bool:
        """True while the NOSPACE alarm is raised (writes that add data are refused)."""
        return self._nospace

    def db_size(self) -> int:
        """Bytes of the database file plus its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """Serve a Range from local state (raises EtcdError on bad revisions)."""
        with self._lock:
            return self._range(req, self._rev)

    def read_txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """Serve a Txn without puts or deletes locally (nothing is written)."""
        with self._lock:
            return self._txn(_Write(rev=self._rev + 1), req)

    def sys_get(self, req: system_pb2.GetRequest) -> system_pb2.GetResponse:
        """One key of the system keyspace, from local state."""
        with self._lock:
            return system.get(self._db, req)

    def sys_range(self, req: system_pb2.RangeRequest) -> system_pb2.RangeResponse:
        """Keys of the system keyspace under a prefix, from local state."""
        with self._lock:
            return system.range_(self._db, req)

    @property
    def sys_migrated(self) -> bool:
        """True once the legacy public IAM keys were moved into the system keyspace."""
        with self._lock:
            return system.migrated(self._db)

    def events_since(
        self, start_rev: int, key: bytes, range_end: bytes, until_rev: int
    ) -> list[WatchEvent]:
        """Stored changes to ``key``/``range_end`` with start_rev <= revision <= until_rev.

        Callers check ``start_rev`` against the compact revision first; prev_kv is filled
        from the history like etcd does for watchers that ask for it.
        """
        where, params = key_clause(key, range_end, "h.key")
        sql = (
            "SELECT h.rev, h.key, h.create_rev, h.version, h.value, h.lease, "
            " (SELECT p.rev FROM hist p WHERE p.key = h.key AND p.rev < h.rev "
            "  ORDER BY p.rev DESC LIMIT 1) "
            f"FROM hist h WHERE h.rev >= ? AND h.rev <= ? AND {where} ORDER BY h.rev, h.sub"
        )
        with self._lock:
            rows = self._db.execute(sql, (start_rev, until_rev, *params)).fetchall()
            out = []
            for rev, k, create_rev, version, value, lease, prev_rev in rows:
                prev = self._hist_row(k, prev_rev) if prev_rev is not None else None
                row = (k, create_rev, rev, version, value, lease) if version else None
                out.append(WatchEvent(rev, k, row, prev))
        return out

    def _hist_row(self, key: bytes, rev: int) -> _Row | None:
        row: _Row | None = self._db.execute(
            "SELECT key, create_rev, rev, version, value, lease FROM hist "
            "WHERE key = ? AND rev = ?",
            (key, rev),
        ).fetchone()
        if row is None or row[3] == 0:
            return None  # compacted away, or a deletion
        return row

    def hash_kv(self, revision: int = 0) -> tuple[int, int, int]:
        """(crc32 of every stored change up to ``revision``, compact rev, hashed rev).

        Equal on every member that applied the same log, so HashKV can spot divergence.
        """
        with self._lock:
            rev = revision or self._rev
            if rev > self._rev:
                raise errors.FUTURE_REV
            if 0 < revision <= self._compact_rev:  # etcd's hashByRev: the compacted one too
                raise errors.COMPACTED
            h = 0
            cursor = self._db.execute(
                "SELECT rev, sub, key, create_rev, version, value, lease FROM hist "
                "WHERE rev <= ? ORDER BY rev, sub",
                (rev,),
            )
            for row in cursor:
                h = zlib.crc32(repr(row).encode(), h)
            return h, self._compact_rev, rev

    def defragment(self) -> None:
        """Rebuild the database file to return the space freed by compaction."""
        with self._lock:
            self._db.execute("VACUUM")

    # -- snapshots -------------------------------------------------------------------

    def backup_bytes(self) -> bytes:
        """A consistent copy of the whole database: a standalone file image.

        ``serialize`` reads every page once through this connection (the WAL's too); the
        engine takes a snapshot on the event loop, so this is a stall on every node every
        ``snapshot_threshold`` entries: an online backup into a memory database copied
        each page twice and took about twice as long.
        """
        with self._lock:
            return standalone(self._db.serialize())

    def client_backup_bytes(self) -> bytes:
        """:meth:`backup_bytes` without the system keyspace's records: what an etcd client
        may download (Maintenance.Snapshot). IAM's records (password hashes, signing
        keys) never leave through an etcd call; a cluster restored from it keeps its
        user keys and needs IAM bootstrapped again."""
        image = sqlite3.connect(":memory:", isolation_level=None)  # VACUUM needs autocommit
        try:
            image.deserialize(self.backup_bytes())
            system.scrub(image)
            return standalone(image.serialize())
        finally:
            image.close()

    def snapshot(self) -> bytes:
        return self.backup_bytes()

    def snapshot_reader(self) -> Callable[[], bytes]:
        # applies commit before they return, so the file's last commit is the applied state
        return pin_image(self.path)

    def restore(self, data: bytes, index: int) -> None:
        """Replace the database with a snapshot taken at ``index`` (atomic file swap)."""
        with self._lock, self._checkpointer.lock:
            tmp = self.path.with_suffix(".restore")
            _write_durably(tmp, data)
            check = sqlite3.connect(tmp)
            try:
                check.execute("PRAGMA journal_mode=DELETE")
                ok = check.execute("PRAGMA quick_check").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                ok = str(exc)
            finally:
                check.close()
            if ok != "ok":
                tmp.unlink()
                raise ValueError(f"snapshot at index {index} is not a valid database: {ok}")
            self._db.close()
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)  # the rename itself survives a power cut
            self._db = self._open()
            self._db.execute(
                "INSERT OR REPLACE INTO meta(k, v) VALUES('applied_index', ?)", (index,)
            )
            self._load()
            for listener in self._restore_listeners:
                listener()

    # -- apply -----------------------------------------------------------------------

    def apply(self, entries: Sequence[Entry]) -> list[Any]:
        """Apply committed entries in one SQLite transaction; one result per entry."""
        if not entries:
            return []
        with self._lock:
            try:
                return self._apply_batch(entries, careful=False)
            except _Mishandled:
                # rare: a request the code mishandles. Redo the batch with a savepoint per
                # entry so that entry alone is undone (two more statements per entry, a
                # fifth of a put's apply, so only when needed)
                return self._apply_batch(entries, careful=True)

    def _apply_batch(self, entries: Sequence[Entry], careful: bool) -> list[Any]:
        results: list[Any] = []
        events: list[WatchEvent] = []
        after_commit: list[Callable[[], None]] = []
        db = self._db
        db.execute("BEGIN")
        try:
            for entry in entries:
                if entry.index <= self._applied:
                    # replayed entry already in our storage: its effects are durable
                    results.append(None)
                    continue
                results.append(self._apply_one(entry, events, after_commit, careful))
                self._applied = entry.index
            db.executemany(
                "INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)",
                (
                    ("applied_index", self._applied),
                    ("revision", self._rev),
                    ("compact_revision", self._compact_rev),
                ),
            )
            db.execute("COMMIT")
        except _Mishandled:
            db.execute("ROLLBACK")
            self._reload_meta()  # lease timers stay as they are: the batch is redone
            self._reload_memory()
            raise
        except BaseException:
            db.execute("ROLLBACK")
            self._load()
            raise
        for action in after_commit:
            action()
        if events:
            for listener in self._listeners:
                listener(events)
        return results

    def _apply_one(
        self,
        entry: Entry,
        events: list[WatchEvent],
        after_commit: list[Callable[[], None]],
        careful: bool,
    ) -> Any:
        if not entry.data:
            return None  # engine no-op (e.g. a new leader's first entry)
        try:
            op, req = decode(entry.data)
        except CommandError as exc:
            return errors.invalid_argument(str(exc))
        w = _Write(rev=self._rev + 1)
        dispatch = self._dispatch_alone if careful else self._dispatch
        try:
            result = dispatch(op, req, w, entry, after_commit)
        except errors.EtcdError as exc:
            # checks run before any change, so an error leaves nothing behind
            return exc
        except Exception as exc:
            raise _Mishandled(entry.index) from exc
        if w.sub:
            self._rev = w.rev
            events.extend(w.events)
        return result

    def _dispatch_alone(
        self,
        op: Op,
        req: Any,
        w: _Write,
        entry: Entry,
        after_commit: list[Callable[[], None]],
    ) -> Any:
        """:meth:`_dispatch` inside a savepoint. A request this code mishandles must not
        stop every replica: just this entry is undone (the same on every node, so they
        stay identical) and answered INTERNAL."""
        pending = len(after_commit)
        self._db.execute("SAVEPOINT entry")
        try:
            return self._dispatch(op, req, w, entry, after_commit)
        except errors.EtcdError:
            raise
        except Exception as exc:
            log.exception("entry %d (%s) failed to apply; rolled back", entry.index, op.name)
            self._db.execute("ROLLBACK TO entry")
            del after_commit[pending:]
            self._reload_memory()
            raise errors.EtcdError(
                errors.INTERNAL_CODE, f"etcdserver: {type(exc).__name__}"
            ) from exc
        finally:
            self._db.execute("RELEASE entry")

    def _dispatch(
        self,
        op: Op,
        req: Any,
        w: _Write,
        entry: Entry,
        after_commit: list[Callable[[], None]],
    ) -> Any:
        if op is Op.PUT:
            if self._nospace:
                raise errors.NO_SPACE
            # etcd's Put looks the lease up first; a put in a txn checks the key first
            self._check_lease(req)
            self._check_prev(req)
            return self._put(w, req)
        if op is Op.DELETE_RANGE:
            return self._delete_range(w, req)
        if op is Op.TXN:
            return self._txn(w, req)
        if op is Op.COMPACT:
            return self._compact(req)
        if op is Op.LEASE_GRANT:
            return self._lease_grant(req, entry, after_commit)
        if op is Op.LEASE_REVOKE:
            return self._lease_revoke(w, req, after_commit)
        if op is Op.LEASE_KEEPALIVE:
            ttl = self._leases.get(req.ID)
            if ttl is None:
                raise errors.LEASE_NOT_FOUND
            after_commit.append(lambda: self.timers.renew(req.ID, ttl))
            return rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=ttl)
        if op is Op.ALARM:
            return self._alarm(req)
        if op is Op.SYS_PUT:
            return system.put(self._db, req)
        if op is Op.SYS_DELETE:
            return system.delete(self._db, req)
        if op is Op.SYS_CAS:
            return system.compare_and_swap(self._db, req)
        if op is Op.SYS_MIGRATE:
            return self._sys_migrate(w, req)
        raise AssertionError(op)

    def _sys_migrate(self, w: _Write, req: system_pb2.MigrateRequest) -> system_pb2.MigrateResponse:
        """Move the public keys under the legacy prefix into the system keyspace, once:
        after the marker is set, keys written there are ordinary user keys."""
        if system.migrated(self._db):
            return system_pb2.MigrateResponse(moved=0)
        where, params = key_clause(req.prefix, prefix_end(req.prefix))
        rows = self._db.execute(
            f"SELECT {_CUR_COLS} FROM cur WHERE {where} ORDER BY key", params
        ).fetchall()
        system.adopt(self._db, [(r[0], r[4]) for r in rows])
        self._delete_rows(w, rows)
        return system_pb2.MigrateResponse(moved=len(rows))

    # -- KV operations -----------------------------------------------------------------

    def _get(self, key: bytes) -> _Row | None:
        row: _Row | None = self._db.execute(
            f"SELECT {_CUR_COLS} FROM cur WHERE key = ?", (key,)
        ).fetchone()
        return row

    def _check_lease(self, req: rpc_pb2.PutRequest) -> None:
        if req.lease and req.lease not in self._leases:
            raise errors.LEASE_NOT_FOUND

    def _check_prev(self, req: rpc_pb2.PutRequest) -> None:
        """ignore_value and ignore_lease need a key to take them from."""
        if (req.ignore_value or req.ignore_lease) and self._get(req.key) is None:
            raise errors.KEY_NOT_FOUND

    def _put(self, w: _Write, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        prev = self._get(req.key)
        value = prev[4] if (req.ignore_value and prev) else req.value
        lease = prev[5] if (req.ignore_lease and prev) else req.lease
        create_rev = prev[1] if prev else w.rev
        version = prev[3] + 1 if prev else 1
        row: _Row = (req.key, create_rev, w.rev, version, value, lease)
        self._db.execute(f"INSERT OR REPLACE INTO cur({_CUR_COLS}) VALUES(?,?,?,?,?,?)", row)
        self._db.execute(
            "INSERT OR REPLACE INTO hist(rev, sub, key, create_rev, version, value, lease) "
            "VALUES(?,?,?,?,?,?,?)",
            (w.rev, w.sub, req.key, create_rev, version, value, lease),
        )
        w.sub += 1
        w.events.append(WatchEvent(w.rev, req.key, row, prev))
        resp = rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=w.rev))
        if req.prev_kv and prev is not None:
            resp.prev_kv.CopyFrom(_kv(prev))
        return resp

    def _delete_rows(self, w: _Write, rows: list[_Row]) -> None:
        for row in rows:
            key = row[0]
            self._db.execute("DELETE FROM cur WHERE key = ?", (key,))
            self._db.execute(
                "INSERT OR REPLACE INTO hist(rev, sub, key, create_rev, version, value, lease) "
                "VALUES(?,?,?,0,0,x'',0)",
                (w.rev, w.sub, key),
            )
            w.sub += 1
            w.events.append(WatchEvent(w.rev, key, None, row))

    def _delete_range(
        self, w: _Write, req: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse:
        where, params = key_clause(req.key, req.range_end)
        rows = self._db.execute(
            f"SELECT {_CUR_COLS} FROM cur WHERE {where} ORDER BY key", params
        ).fetchall()
        self._delete_rows(w, rows)
        resp = rpc_pb2.DeleteRangeResponse(
            header=rpc_pb2.ResponseHeader(revision=w.rev if w.sub else w.rev - 1),
            deleted=len(rows),
        )
        if req.prev_kv:
            resp.prev_kvs.extend(_kv(r) for r in rows)
        return resp

    def _range(self, req: rpc_pb2.RangeRequest, cur_rev: int) -> rpc_pb2.RangeResponse:
        rev = req.revision
        if rev > cur_rev:
            raise errors.FUTURE_REV
        if rev <= 0:
            rev = cur_rev
        if rev < self._compact_rev:
            raise errors.COMPACTED
        if not req.range_end and rev >= cur_rev:
            return self._get_one(req, cur_rev)
        where, params = key_clause(req.key, req.range_end)
        if rev >= cur_rev:
            source = f"SELECT {_CUR_COLS} FROM cur WHERE {where}"
            args: tuple[Any, ...] = params
        else:
            # SQLite returns the bare columns of the row holding MAX(rev) in each group
            source = (
                "SELECT key, create_rev, mod_rev, version, value, lease FROM ("
                "SELECT key, create_rev, MAX(rev) AS mod_rev, version, value, lease FROM hist "
                f"WHERE {where} AND rev <= ? GROUP BY key) WHERE version > 0"
            )
            args = (*params, rev)
        resp = rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(revision=cur_rev))
        if req.count_only:
            resp.count = self._db.execute(f"SELECT COUNT(*) FROM ({source})", args).fetchone()[0]
            return resp
        filtered = bool(
            req.sort_order
            or req.min_mod_revision
            or req.max_mod_revision
            or req.min_create_revision
            or req.max_create_revision
        )
        fetch = req.limit + 1 if (req.limit > 0 and not filtered) else 0
        sql = f"SELECT * FROM ({source}) ORDER BY key" + (f" LIMIT {fetch}" if fetch else "")
        rows = self._db.execute(sql, args).fetchall()
        if fetch and len(rows) >= fetch:
            total = self._db.execute(f"SELECT COUNT(*) FROM ({source})", args).fetchone()[0]
        else:
            total = len(rows)
        kvs = [_kv(r) for r in rows]
        kvs = _filter_revisions(kvs, req)
        order = req.sort_order
        if req.sort_target != rpc_pb2.RangeRequest.KEY and order == rpc_pb2.RangeRequest.NONE:
            order = rpc_pb2.RangeRequest.ASCEND
        # an order outside the enum leaves the keys in key order, as etcd does
        if order in (rpc_pb2.RangeRequest.ASCEND, rpc_pb2.RangeRequest.DESCEND):
            kvs.sort(
                # an unknown target (proto3 enums are open) sorts by key
                key=_SORT_KEYS.get(req.sort_target, _SORT_KEYS[rpc_pb2.RangeRequest.KEY]),
                reverse=order == rpc_pb2.RangeRequest.DESCEND,
            )
        if req.limit > 0 and len(kvs) > req.limit:
            kvs = kvs[: req.limit]
            resp.more = True
        if req.keys_only:
            for kv in kvs:
                kv.value = b""
        resp.kvs.extend(kvs)
        resp.count = total
        return resp

    def _get_one(self, req: rpc_pb2.RangeRequest, cur_rev: int) -> rpc_pb2.RangeResponse:
        """The common case, one key at the current revision, without the general machinery."""
        row = self._get(req.key)
        resp = rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(revision=cur_rev))
        if row is None:
            return resp
        resp.count = 1
        if req.count_only:
            return resp
        kvs = _filter_revisions([_kv(row)], req)
        if kvs and req.keys_only:
            kvs[0].value = b""
        resp.kvs.extend(kvs)
        return resp

    # -- transactions ----------------------------------------------------------------

    def _decide(self, req: rpc_pb2.TxnRequest) -> _Decision:
        ok = all(self._compare(c) for c in req.compare)
        ops = req.success if ok else req.failure
        children = [self._decide(op.request_txn) for op in ops if op.HasField("request_txn")]
        return _Decision(ok, children)

    def _compare(self, c: rpc_pb2.Compare) -> bool:
        where, params = key_clause(c.key, c.range_end)
        rows = self._db.execute(f"SELECT {_CUR_COLS} FROM cur WHERE {where}", params).fetchall()
        if not rows:
            if c.target == rpc_pb2.Compare.VALUE:
                return False  # a missing key has no value to compare, as in etcd
            return _compare_kv(c, kv_pb2.KeyValue())
        return all(_compare_kv(c, _kv(r)) for r in rows)

    def _walk(
        self, req: rpc_pb2.TxnRequest, d: _Decision
    ) -> Iterator[tuple[rpc_pb2.RequestOp, _Decision | None]]:
        """The ops on the chosen path, nested txns paired with their decisions."""
        children = iter(d.children)
        for op in req.success if d.succeeded else req.failure:
            yield op, (next(children) if op.HasField("request_txn") else None)

    def _path(self, req: rpc_pb2.TxnRequest, d: _Decision) -> Iterator[rpc_pb2.RequestOp]:
        """Every non-txn op on the chosen path, depth first in request order."""
        for op, child in self._walk(req, d):
            if child is not None:
                yield from self._path(op.request_txn, child)
            else:
                yield op

    def _check_txn(self, req: rpc_pb2.TxnRequest, d: _Decision, cur_rev: int) -> None:
        """Validate the chosen path before changing anything, in etcd's order (apply.go
        checkRequests): every put first (its key, then its lease), then every range."""
        ops = list(self._path(req, d))
        for op in ops:
            if op.WhichOneof("request") == "request_put":
                self._check_prev(op.request_put)
                self._check_lease(op.request_put)
        for op in ops:
            if op.WhichOneof("request") == "request_range":
                rev = op.request_range.revision
                if rev > cur_rev:
                    raise errors.FUTURE_REV
                # unlike a plain Range, a txn's checks hold a negative revision against
                # the compacted one too (etcd's checkRequestRange)
                if rev != 0 and rev < self._compact_rev:
                    raise errors.COMPACTED

    def _txn(self, w: _Write, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        if self._nospace and txn_writes(req)[1]:
            raise errors.NO_SPACE  # etcd's capped applier refuses any txn that puts
        decision = self._decide(req)
        self._check_txn(req, decision, self._rev)
        resp = self._run_txn(w, req, decision)
        # only the outer header carries the txn's revision; etcd leaves nested txns'
        # headers empty
        resp.header.revision = w.rev if w.sub else w.rev - 1
        return resp

    def _run_txn(self, w: _Write, req: rpc_pb2.TxnRequest, d: _Decision) -> rpc_pb2.TxnResponse:
        """Each op's response carries the revision as of that op, like etcd's txn: the
        new revision once the txn has changed something, the old one before."""
        resp = rpc_pb2.TxnResponse(succeeded=d.succeeded)
        resp.header.SetInParent()
        for op, child in self._walk(req, d):
            kind = op.WhichOneof("request")
            out = resp.responses.add()
            if kind == "request_range":
                out.response_range.CopyFrom(
                    self._range(op.request_range, w.rev if w.sub else w.rev - 1)
                )
            elif kind == "request_put":
                out.response_put.CopyFrom(self._put(w, op.request_put))
            elif kind == "request_delete_range":
                out.response_delete_range.CopyFrom(self._delete_range(w, op.request_delete_range))
            elif kind == "request_txn" and child is not None:
                out.response_txn.CopyFrom(self._run_txn(w, op.request_txn, child))
        return resp

    # -- compaction, leases, alarms ----------------------------------------------------

    def _compact(self, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        rev = req.revision
        if rev <= self._compact_rev:
            raise errors.COMPACTED
        if rev > self._rev:
            raise errors.FUTURE_REV
        # keep, per key, the newest change at or below rev (unless it is a deletion)
        self._db.execute(
            "DELETE FROM hist WHERE rev < ? AND EXISTS (SELECT 1 FROM hist n "
            "WHERE n.key = hist.key AND n.rev > hist.rev AND n.rev <= ?)",
            (rev, rev),
        )
        self._db.execute("DELETE FROM hist WHERE rev <= ? AND version = 0", (rev,))
        self._compact_rev = rev
        return rpc_pb2.CompactionResponse(header=rpc_pb2.ResponseHeader(revision=self._rev))

    def _lease_grant(
        self,
        req: rpc_pb2.LeaseGrantRequest,
        entry: Entry,
        after_commit: list[Callable[[], None]],
    ) -> rpc_pb2.LeaseGrantResponse:
        if self._nospace:
            raise errors.NO_SPACE
        if req.TTL > MAX_TTL:
            raise errors.LEASE_TTL_TOO_LARGE
        lease_id = req.ID
        if lease_id == 0:
            lease_id = _lease_id_for(entry)
            while lease_id in self._leases:
                lease_id = (lease_id + 1) & 0x7FFF_FFFF_FFFF_FFFF or 1
        elif lease_id in self._leases:
            raise errors.LEASE_EXISTS
        ttl = max(req.TTL, MIN_TTL)
        self._db.execute("INSERT INTO lease(id, ttl) VALUES(?, ?)", (lease_id, ttl))
        self._leases[lease_id] = ttl
        after_commit.append(lambda: self.timers.renew(lease_id, ttl))
        return rpc_pb2.LeaseGrantResponse(
            header=rpc_pb2.ResponseHeader(revision=self._rev), ID=lease_id, TTL=ttl
        )

    def _lease_revoke(
        self,
        w: _Write,
        req: rpc_pb2.LeaseRevokeRequest,
        after_commit: list[Callable[[], None]],
    ) -> rpc_pb2.LeaseRevokeResponse:
        if req.ID not in self._leases:
            raise errors.LEASE_NOT_FOUND
        rows = self._db.execute(
            f"SELECT {_CUR_COLS} FROM cur WHERE lease = ? ORDER BY key", (req.ID,)
        ).fetchall()
        self._delete_rows(w, rows)
        self._db.execute("DELETE FROM lease WHERE id = ?", (req.ID,))
        del self._leases[req.ID]
        after_commit.append(lambda: self.timers.forget(req.ID))
        return rpc_pb2.LeaseRevokeResponse(
            header=rpc_pb2.ResponseHeader(revision=w.rev if w.sub else w.rev - 1)
        )

    def _alarm(self, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        resp = rpc_pb2.AlarmResponse()
        member = rpc_pb2.AlarmMember(memberID=req.memberID, alarm=req.alarm)
        known = req.alarm in (rpc_pb2.NOSPACE, rpc_pb2.CORRUPT)
        if req.action == rpc_pb2.AlarmRequest.ACTIVATE and known:
            self._db.execute(
                "INSERT OR IGNORE INTO alarm(member_id, alarm) VALUES(?, ?)",
                (req.memberID, req.alarm),
            )
            resp.alarms.append(member)
        elif req.action == rpc_pb2.AlarmRequest.DEACTIVATE:
            deleted = self._db.execute(
                "DELETE FROM alarm WHERE member_id = ? AND alarm = ?", (req.memberID, req.alarm)
            ).rowcount
            if deleted:
                resp.alarms.append(member)
        self._nospace = self._nospace_raised()
        return resp


def txn_writes(r: rpc_pb2.TxnRequest) -> tuple[bool, bool]:
    """(has any put or delete, has any put) anywhere in the txn."""
    writes = puts = False
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "request_put":
            writes = puts = True
        elif kind == "request_delete_range":
            writes = True
        elif kind == "request_txn":
            w, p = txn_writes(op.request_txn)
            writes, puts = writes or w, puts or p
    return writes, puts


def _filter_revisions(
    kvs: list[kv_pb2.KeyValue], req: rpc_pb2.RangeRequest
) -> list[kv_pb2.KeyValue]:
    if req.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
    if req.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
    if req.max_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
    if req.min_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
    return kvs


def _compare_kv(c: rpc_pb2.Compare, kv: kv_pb2.KeyValue) -> bool:
    target = c.target
    actual: Any
    expected: Any
    if target == rpc_pb2.Compare.VALUE:
        actual, expected = kv.value, c.value
    elif target == rpc_pb2.Compare.CREATE:
        actual, expected = kv.create_revision, c.create_revision
    elif target == rpc_pb2.Compare.MOD:
        actual, expected = kv.mod_revision, c.mod_revision
    elif target == rpc_pb2.Compare.VERSION:
        actual, expected = kv.version, c.version
    else:
        actual, expected = kv.lease, c.lease
    result = c.result
    if result == rpc_pb2.Compare.EQUAL:
        return bool(actual == expected)
    if result == rpc_pb2.Compare.NOT_EQUAL:
        return bool(actual != expected)
    if result == rpc_pb2.Compare.GREATER:
        return bool(actual > expected)
    if result == rpc_pb2.Compare.LESS:
        return bool(actual < expected)
    return True


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lease_id_for(entry: Entry) -> int:
    """A lease ID chosen deterministically from the log position (same on every node)."""
    digest = hashlib.sha256(f"lease:{entry.term}:{entry.index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF or 1
