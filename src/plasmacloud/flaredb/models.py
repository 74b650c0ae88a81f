"""Request and result models shared by the FlareDB server and its client.

The seed's FlareDB never ran because its SQL layer's ``QueryResult``/``ErrorResult``
drifted from the server that used them. Here both sides build and read the wire JSON
through the same classes (``to_json``/``from_json``), so a field renamed on one side is
renamed on the other, and the contract test (client against a live server) catches the
rest.

Wire shapes follow rqlite 8:

* request body: a JSON array whose items are ``"SQL"``, ``["SQL", p1, p2, ...]`` or
  ``["SQL", {"name": value}]``; a parameter that is a string ``"x'0A1B'"`` or an array
  of byte values ``[10, 27]`` is a BLOB (rqlite 8's ``http/request_parser.go``);
* query result: ``{"columns": [...], "types": [...], "values": [[...]]}`` or, with
  ``?associative``, ``{"types": {col: type}, "rows": [{col: value}]}``;
* execute result: ``{"last_insert_id": N, "rows_affected": N}`` (zero fields omitted);
* a failed statement: ``{"error": "..."}``; every result may carry ``"time"`` (seconds).

How results are written depends on the request (:class:`WireForm`), as in rqlite 8's
``command/encoding/json.go``: BLOBs are base64 (or arrays of byte values with
``?blob_array``); a float with a whole value is written as Go writes it (``3``, not
``3.0``); and the associative form differs by endpoint: ``/db/request`` adds
``"rows": null`` to execute results so clients can tell them from queries, and a failed
statement of ``/db/query`` still carries its (empty) ``"rows"``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any, TypeAlias

Scalar: TypeAlias = str | int | float | bytes | None
Params: TypeAlias = tuple[Scalar, ...] | dict[str, Scalar]

_SCALARS = (str, int, float, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
_PARAMS_OF_ITEM = itemgetter(slice(1, None))
_COUNTERS = '{"last_insert_id":%d,"rows_affected":%d}'
# A BLOB parameter written as SQLite's literal (rqlite's db.ParseHex: spaces around it
# are ignored, the hex digits must be complete bytes).
_HEX_PARAM = re.compile(r"\s*[xX]'((?:[0-9A-Fa-f]{2})*)'\s*")


class RequestError(ValueError):
    """The request body is not a valid statement list; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement with positional (``?``) or named (``:name``) parameters."""

    sql: str
    params: Params = ()

    def to_json(self) -> str | list[Any]:
        """The rqlite wire form: a bare string when there are no parameters."""
        params = self.wire_params()
        if isinstance(params, dict):
            return [self.sql, params]
        return [self.sql, *params] if params else self.sql

    def wire_params(self) -> list[Any] | dict[str, Any]:
        """The parameters as JSON values (BLOBs as ``x'..'`` strings, as rqlite reads
        them)."""
        if isinstance(self.params, dict):
            return {k: _wire_param(v) for k, v in self.params.items()}
        return [_wire_param(v) for v in self.params]

    @classmethod
    def from_json(cls, item: Any, position: int = 1) -> Statement:
        """Parse one item of a request array; ``position`` (1-based) goes into errors."""
        where = f"statement {position}"
        if isinstance(item, str):
            return cls(_check_sql(item, where))
        if not isinstance(item, list):
            raise RequestError(
                f"{where}: expected a string or an array [sql, params...], got {_json_type(item)}"
            )
        if not item:
            raise RequestError(f"{where}: empty array; the first item must be the SQL text")
        sql = item[0]
        if not isinstance(sql, str):
            raise RequestError(
                f"{where}: the first item must be the SQL text, got {_json_type(sql)}"
            )
        rest = item[1:]
        if len(rest) == 1 and isinstance(rest[0], dict):
            named = {}
            for name, value in rest[0].items():
                named[name] = _check_param(value, f"{where}: parameter {name!r}")
            return cls(_check_sql(sql, where), named)
        # Exact types: a bool needs converting; so does a string holding a BLOB.
        if all(type(v) in _SCALARS for v in rest) and not _any_hex(rest):
            return cls(_check_sql(sql, where), tuple(rest))
        positional = tuple(
            _check_param(v, f"{where}: parameter {i}") for i, v in enumerate(rest, start=1)
        )
        return cls(_check_sql(sql, where), positional)


def _check_sql(sql: str, where: str) -> str:
    if not sql.strip():
        raise RequestError(f"{where}: empty SQL text")
    return sql


def _hex_blob(value: str) -> bytes | None:
    m = _HEX_PARAM.fullmatch(value)
    return bytes.fromhex(m.group(1)) if m else None


def _any_hex(values: Iterable[Any]) -> bool:
    return any(type(v) is str and _HEX_PARAM.fullmatch(v) for v in values)


def _wire_param(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "x'" + bytes(value).hex() + "'"
    return value


def _check_param(value: Any, where: str) -> Scalar:
    # JSON true/false become SQLite's 1/0, as rqlite does.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        blob = _hex_blob(value)
        return value if blob is None else blob
    if isinstance(value, _SCALARS):
        return value  # type: ignore[no-any-return]
    if isinstance(value, list) and all(type(b) is int and 0 <= b <= 255 for b in value):
        return bytes(value)
    raise RequestError(
        f"{where} has unsupported type {_json_type(value)} (use a string, number, boolean, "
        "null or an array of byte values)"
    )


def _json_type(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive statements of one request that share their SQL text.

    A bulk insert is one run: its SQL is checked, stored in the log entry and prepared
    once, and ``params`` holds each statement's parameters (as in :class:`Statement`).
    """

    sql: str
    params: tuple[Params, ...]

    def statements(self) -> list[Statement]:
        """The run as one :class:`Statement` per parameter set."""
        return [Statement(self.sql, p) for p in self.params]


def group_runs(statements: Iterable[Statement]) -> list[Run]:
    """Statements grouped into runs of consecutive ones with the same SQL text."""
    return [
        Run(sql, tuple(s.params for s in group))
        for sql, group in itertools.groupby(statements, key=attrgetter("sql"))
    ]


def statement_count(runs: Iterable[Run]) -> int:
    """How many statements the runs hold."""
    return sum(len(r.params) for r in runs)


def _load_array(body: bytes | str) -> list[Any]:
    try:
        doc = json.loads(body)
    except ValueError as exc:  # also a number too long to convert, not only syntax
        raise RequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, list):
        raise RequestError(
            f"request body must be a JSON array of statements, got {_json_type(doc)}"
        )
    return doc


def parse_request(body: bytes | str) -> list[Statement]:
    """Parse an HTTP request body (a JSON array of statements) into statements."""
    doc = _load_array(body)
    return [Statement.from_json(item, i) for i, item in enumerate(doc, start=1)]


def parse_runs(body: bytes | str) -> list[Run]:
    """:func:`parse_request`, grouped into runs (:func:`group_runs`).

    The shape of bulk requests (every item ``[sql, p1, ...]`` with parameters that are
    strings, numbers or null) is checked a whole column at a time, without building an
    object per statement; anything else, errors included, goes through the item-by-item
    parser, so both give the same statements and the same messages.
    """
    doc = _load_array(body)
    maybe_hex = _may_hold_quotes(body.encode() if isinstance(body, str) else body)
    return _fast_runs(doc, maybe_hex) or group_runs(
        Statement.from_json(item, i) for i, item in enumerate(doc, start=1)
    )


def _may_hold_quotes(body: bytes) -> bool:
    """False if no string of the JSON ``body`` can hold an apostrophe (so none is a BLOB
    written x'..'): one-byte searches, far cheaper on megabytes than looking for x'."""
    return b"'" in body or (b"\\" in body and b"\\u0027" in body)


def _fast_runs(doc: list[Any], maybe_hex: bool) -> list[Run] | None:
    """Runs of ``doc`` if it is all ``[sql, scalar...]`` items, else None; ``maybe_hex``
    says the body may hold a BLOB written ``x'..'`` (then strings are looked at)."""
    # Exact types throughout: a bool parameter needs converting and a dict is named
    # parameters, so both leave to the full parser, as does any item it would reject.
    if not doc or set(map(type, doc)) != {list} or not all(doc):
        return None
    sqls = list(map(itemgetter(0), doc))
    if set(map(type, sqls)) != {str}:
        return None
    params = list(map(tuple, map(_PARAMS_OF_ITEM, doc)))
    if not _SCALAR_TYPES.issuperset(map(type, itertools.chain.from_iterable(params))):
        return None
    if maybe_hex and _any_hex(itertools.chain.from_iterable(params)):
        return None
    runs = []
    start = 0
    for sql, group in itertools.groupby(sqls):
        if not sql.strip():
            return None
        end = start + len(list(group))
        runs.append(Run(sql, tuple(params[start:end])))
        start = end
    return runs


def encode_request(statements: Sequence[Statement]) -> bytes:
    """The HTTP request body for ``statements`` (what :func:`parse_request` reads)."""
    return json.dumps([s.to_json() for s in statements]).encode()


def wire_value(value: Any) -> Any:
    """A parameter or column value as JSON can carry it (BLOBs base64-encoded)."""
    # JSON has no bytes; rqlite sends BLOBs base64-encoded and so do we.
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


# Go's encoding/json writes a float64 in fixed notation below 1e21, so a whole one as
# an integer: clients parsing rqlite's JSON get an int for REAL 3.0.
_GO_FIXED_LIMIT = 1e21


def _result_value(value: Any, blob_array: bool) -> Any:
    """A column value as rqlite writes it."""
    if type(value) is float and value.is_integer() and abs(value) < _GO_FIXED_LIMIT:
        return int(value)
    if blob_array and isinstance(value, bytes):
        return list(value)
    return wire_value(value)


@dataclass(frozen=True, slots=True)
class WireForm:
    """How one response writes its results: rqlite's ``?associative`` and
    ``?blob_array``, and the endpoint answering ("execute", "query" or "request")."""

    associative: bool = False
    blob_array: bool = False
    endpoint: str = "query"


_PLAIN = WireForm()


def _decode_blob(value: Any) -> Any:
    # A column's type comes from its first value, so a TEXT value can sit in a "blob"
    # column (SQLite is dynamically typed); leave what is not base64 as it is.
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value


@dataclass(slots=True)
class QueryResult:
    """Rows returned by a statement (SELECT, PRAGMA, ``RETURNING``)."""

    columns: list[str]
    types: list[str]
    values: list[list[Any]]
    time: float | None = None

    def to_json(self, form: WireForm = _PLAIN) -> dict[str, Any]:
        """The wire form; the associative one gives rows as objects (not for
        /db/execute, which rqlite always answers in the plain form)."""
        values = [[_result_value(v, form.blob_array) for v in row] for row in self.values]
        out: dict[str, Any] = {}
        if form.associative and form.endpoint != "execute":
            if self.columns:
                out["types"] = dict(zip(self.columns, self.types, strict=True))
            out["rows"] = [dict(zip(self.columns, row, strict=True)) for row in values]
        else:
            out = {"columns": self.columns, "types": self.types}
            if values:  # rqlite omits "values" for an empty result set
                out["values"] = values
        if self.time is not None:
            out["time"] = self.time
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> QueryResult:
        """Read either wire form back; BLOB columns are decoded to bytes."""
        if "rows" in doc:
            types_map = doc.get("types") or {}
            rows = doc["rows"]
            columns = list(types_map) if types_map else (list(rows[0]) if rows else [])
            types = [types_map.get(c, "") for c in columns]
            values = [[r.get(c) for c in columns] for r in rows]
        else:
            columns = list(doc.get("columns", []))
            types = list(doc.get("types", [""] * len(columns)))
            values = [list(r) for r in doc.get("values", [])]
        for i, t in enumerate(types):
            if t == "blob":
                for row in values:
                    row[i] = _decode_blob(row[i])
        return cls(columns, types, values, doc.get("time"))


@dataclass(slots=True)
class ExecuteResult:
    """Outcome of a statement that returned no rows."""

    last_insert_id: int = 0
    rows_affected: int = 0
    time: float | None = None

    def to_json(self, form: WireForm = _PLAIN) -> dict[str, Any]:
        """rqlite omits zero counters (a CREATE TABLE answers ``{}``)."""
        out: dict[str, Any] = {}
        if self.last_insert_id:
            out["last_insert_id"] = self.last_insert_id
        if self.rows_affected:
            out["rows_affected"] = self.rows_affected
        if self.time is not None:
            out["time"] = self.time
        if form.associative and form.endpoint == "request":
            out["rows"] = None
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ExecuteResult:
        return cls(
            int(doc.get("last_insert_id", 0)), int(doc.get("rows_affected", 0)), doc.get("time")
        )


@dataclass(slots=True)
class ErrorResult:
    """A statement that failed; ``error`` is SQLite's (or FlareDB's) message."""

    error: str
    time: float | None = None

    def to_json(self, form: WireForm = _PLAIN) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error}
        if form.associative and form.endpoint == "query":
            out = {"rows": [], **out}
        if self.time is not None:
            out["time"] = self.time
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ErrorResult:
        return cls(str(doc["error"]), doc.get("time"))


Result: TypeAlias = QueryResult | ExecuteResult | ErrorResult


def result_from_json(doc: Mapping[str, Any]) -> Result:
    """Decide which result a wire object is (error, rows or counters) and read it."""
    if "error" in doc:
        return ErrorResult.from_json(doc)
    if "columns" in doc or doc.get("rows") is not None:
        return QueryResult.from_json(doc)
    return ExecuteResult.from_json(doc)


@dataclass(slots=True)
class Response:
    """A whole answer to /db/execute, /db/query or /db/request."""

    results: list[Result] = field(default_factory=list)
    time: float | None = None

    def to_json(self, form: WireForm = _PLAIN) -> dict[str, Any]:
        out: dict[str, Any] = {"results": [r.to_json(form) for r in self.results]}
        if self.time is not None:
            out["time"] = self.time
        return out

    def dumps(self, form: WireForm = _PLAIN) -> str:
        """Compact JSON text of :meth:`to_json`, the same characters as ``json.dumps``
        with ``separators=(",", ":")``; a bulk write's thousands of counters are
        formatted directly instead of through a dict each."""
        parts: list[str] = []
        append = parts.append
        # Both counters set, no time, no "rows": null: every row of a bulk insert without
        # ?timings (and not an associative /db/request).
        counters = not (form.associative and form.endpoint == "request")
        for r in self.results:
            if (
                counters
                and type(r) is ExecuteResult
                and r.time is None
                and r.last_insert_id
                and r.rows_affected
            ):
                append(_COUNTERS % (r.last_insert_id, r.rows_affected))
            else:
                append(json.dumps(r.to_json(form), separators=(",", ":")))
        tail = "" if self.time is None else ',"time":' + json.dumps(self.time)
        return '{"results":[' + ",".join(parts) + "]" + tail + "}"

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Response:
        if "results" not in doc:
            raise RequestError(f"not a FlareDB response: {str(doc)[:200]}")
        return cls([result_from_json(r) for r in doc["results"]], doc.get("time"))
