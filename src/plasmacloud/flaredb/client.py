"""A small synchronous FlareDB client: the HTTP calls, and a DB-API 2.0 style connection.

It reads and writes the wire format only through :mod:`plasmacloud.flaredb.models`, the
same classes the server answers with, so the two cannot drift apart.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from plasmacloud.common.config import NodeConfig
from plasmacloud.common.tls import client_context
from plasmacloud.flaredb.models import (
    ErrorResult,
    ExecuteResult,
    Params,
    QueryResult,
    Response,
    Result,
    Statement,
    encode_request,
)
from plasmacloud.flaredb.sqlscan import is_read_only

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"
_MAX_REDIRECTS = 5


class Error(Exception):
    """Base of every FlareDB client error (DB-API ``Error``)."""


class InterfaceError(Error):
    """The server answered something that is not FlareDB's wire format."""


class DatabaseError(Error):
    """A statement failed in the database; ``result`` is the server's error result."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OperationalError(DatabaseError):
    """The cluster could not serve the request (no leader, timeout, unreachable node)."""


class ProgrammingError(DatabaseError):
    """The request was rejected as malformed or not replicable (HTTP 400)."""


class IntegrityError(DatabaseError):
    """A constraint (UNIQUE, NOT NULL, CHECK, FOREIGN KEY) was violated."""


def _raise_for(result: ErrorResult) -> None:
    if "constraint failed" in result.error:
        raise IntegrityError(result.error)
    raise OperationalError(result.error)


def node_url(config: NodeConfig, node_id: str | None = None) -> str:
    """HTTP API URL of a member (default: the config's own node) as peers and clients see it."""
    peer = config.peer(node_id or config.node_id)
    scheme = "https" if config.tls.enabled else "http"
    return f"{scheme}://{peer.ip}:{peer.ports.flaredb_http}"


def _http_error(status: int) -> type[DatabaseError]:
    # 400: the request itself is wrong; 401/403: credentials; the rest: the cluster.
    return ProgrammingError if status in (400, 401, 403) else OperationalError


class Client:
    """The FlareDB HTTP API as methods; follows the leader's 301 redirects."""

    @classmethod
    def for_node(cls, config: NodeConfig, node_id: str | None = None) -> Client:
        """A client for one member, presenting ``config``'s certificate when TLS is on."""
        return cls(node_url(config, node_id), client_context(config.tls))

    def __init__(
        self,
        url: str = "http://127.0.0.1:4001",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        token: str | None = None,
    ) -> None:
        """``token``: an IAM access token, sent as ``Authorization: Bearer`` (nodes started
        with ``--iam-url`` require one)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InterfaceError(f"FlareDB URL must be http(s)://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}

    def _call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, bytes]:
        query = urlencode({k: ("" if v is True else v) for k, v in (params or {}).items()})
        target = self.url + path + ("?" + query if query else "")
        for _ in range(_MAX_REDIRECTS):
            parts = urlsplit(target)
            conn: http.client.HTTPConnection
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(
                    parts.hostname or "", parts.port, timeout=self.timeout, context=self.ssl_context
                )
            else:
                conn = http.client.HTTPConnection(
                    parts.hostname or "", parts.port, timeout=self.timeout
                )
            try:
                headers = dict(self._auth)
                if body is not None:
                    headers["Content-Type"] = "application/json"
                path_qs = parts.path + ("?" + parts.query if parts.query else "")
                conn.request(method, path_qs, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise OperationalError(f"{target}: {exc}") from exc
            finally:
                conn.close()
            if resp.status in (301, 302, 307, 308) and resp.getheader("Location"):
                target = resp.getheader("Location") or ""
                continue
            return resp.status, data
        raise OperationalError(f"too many redirects from {self.url}")

    def _db(
        self, path: str, statements: Sequence[Statement], params: dict[str, Any]
    ) -> list[Result]:
        status, data = self._call("POST", path, params, encode_request(statements))
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise InterfaceError(f"HTTP {status}: not JSON: {data[:200]!r}") from exc
        if status != 200 or "error" in doc:
            message = str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)
            raise _http_error(status)(message, status)
        return Response.from_json(doc).results

    def execute(
        self, statements: Sequence[Statement], transaction: bool = False, timings: bool = False
    ) -> list[Result]:
        """POST /db/execute: the statements as one replicated write."""
        params: dict[str, Any] = {}
        if transaction:
            params["transaction"] = True
        if timings:
            params["timings"] = True
        return self._db("/db/execute", statements, params)

    def query(
        self, statements: Sequence[Statement], level: str = "weak", associative: bool = False
    ) -> list[Result]:
        """POST /db/query at a consistency level (none, weak, strong, linearizable)."""
        params: dict[str, Any] = {"level": level}
        if associative:
            params["associative"] = True
        return self._db("/db/query", statements, params)

    def request(
        self, statements: Sequence[Statement], level: str = "weak", transaction: bool = False
    ) -> list[Result]:
        """POST /db/request: reads and writes mixed."""
        params: dict[str, Any] = {"level": level}
        if transaction:
            params["transaction"] = True
        return self._db("/db/request", statements, params)

    def _get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        status, data = self._call("GET", path, params)
        if status != 200:
            raise OperationalError(f"GET {path}: HTTP {status}: {data[:200]!r}", status)
        return json.loads(data)

    def status(self) -> dict[str, Any]:
        """GET /status."""
        return dict(self._get_json("/status"))

    def nodes(self) -> list[dict[str, Any]]:
        """GET /nodes (one dict per member)."""
        return list(self._get_json("/nodes", {"ver": "2"})["nodes"])

    def ready(self) -> bool:
        """GET /readyz: True when the node is up and knows a leader."""
        try:
            return self._call("GET", "/readyz")[0] == 200
        except OperationalError:
            return False

    def join(self, node_id: str, addr: str) -> None:
        """POST /join: add a node whose Raft port is ``addr`` (done if it is a member)."""
        self._cluster_change("POST", "/join", {"id": node_id, "addr": addr, "voter": True})

    def remove(self, node_id: str) -> None:
        """DELETE /remove: take a node out of the cluster."""
        self._cluster_change("DELETE", "/remove", {"id": node_id})

    def _cluster_change(self, method: str, path: str, body: dict[str, Any]) -> None:
        status, data = self._call(method, path, None, json.dumps(body).encode())
        if status != 200:
            raise _http_error(status)(f"{path}: HTTP {status}: {data[:300]!r}", status)

    def backup(self, sql: bool = False) -> bytes:
        """GET /db/backup: the SQLite file (or a SQL dump)."""
        status, data = self._call("GET", "/db/backup", {"fmt": "sql"} if sql else None)
        if status != 200:
            raise OperationalError(f"backup: HTTP {status}: {data[:200]!r}", status)
        return data

    def load(self, data: bytes) -> None:
        """POST /db/load: replace the database with a SQLite file or SQL dump."""
        status, body = self._call("POST", "/db/load", None, data)
        if status != 200:
            raise _http_error(status)(f"load: HTTP {status}: {body[:300]!r}", status)


class Cursor:
    """DB-API cursor: reads go to /db/query, writes to /db/execute."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.description: tuple[tuple[Any, ...], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._pos = 0

    def _take(self, result: Result) -> None:
        if isinstance(result, ErrorResult):
            _raise_for(result)
        self._rows, self._pos = [], 0
        if isinstance(result, QueryResult):
            self.description = tuple(
                (c, t, None, None, None, None, None)
                for c, t in zip(result.columns, result.types, strict=True)
            )
            self._rows = [tuple(r) for r in result.values]
            self.rowcount = len(self._rows)
        elif isinstance(result, ExecuteResult):
            self.description = None
            self.rowcount = result.rows_affected
            self.lastrowid = result.last_insert_id or None

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        """Run one statement with ``?`` (sequence) or ``:name`` (mapping) parameters."""
        stmt = Statement(sql, dict(params) if isinstance(params, dict) else tuple(params))
        conn = self.connection
        if is_read_only(sql):
            results = conn.client.query([stmt], level=conn.level)
        else:
            results = conn.client.execute([stmt])
        self._take(results[0])
        return self

    def executemany(self, sql: str, seq_of_params: Sequence[Params]) -> Cursor:
        """All parameter sets in one request, applied as one transaction."""
        stmts = [
            Statement(sql, dict(p) if isinstance(p, dict) else tuple(p)) for p in seq_of_params
        ]
        results = self.connection.client.execute(stmts, transaction=True)
        for r in results:
            if isinstance(r, ErrorResult):
                _raise_for(r)
        self.description = None
        self.rowcount = sum(r.rows_affected for r in results if isinstance(r, ExecuteResult))
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._pos >= len(self._rows):
            return None
        self._pos += 1
        return self._rows[self._pos - 1]

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        n = self.arraysize if size is None else size
        out = self._rows[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def fetchall(self) -> list[tuple[Any, ...]]:
        out = self._rows[self._pos :]
        self._pos = len(self._rows)
        return out

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._rows = []


class Connection:
    """DB-API connection. Every write commits on its own (as with rqlite); use
    :meth:`Cursor.executemany` or :meth:`Client.execute` with ``transaction=True`` for
    all-or-nothing batches."""

    def __init__(self, client: Client, level: str = "weak") -> None:
        self.client = client
        self.level = level

    def cursor(self) -> Cursor:
        return Cursor(self)

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        return self.cursor().execute(sql, params)

    def commit(self) -> None:
        """Nothing to do: each write is already replicated when execute returns."""

    def rollback(self) -> None:
        """Nothing to undo: writes commit when execute returns (as with pyrqlite, so code
        that rolls back on an exception does not fail a second time)."""

    def close(self) -> None:
        """Nothing is held open between requests."""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    url: str = "http://127.0.0.1:4001",
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    level: str = "weak",
) -> Connection:
    """Open a DB-API style connection to a FlareDB node."""
    return Connection(Client(url, ssl_context, timeout), level)
