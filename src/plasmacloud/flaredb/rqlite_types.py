"""A query's ``types`` and ``values`` as rqlite 8 reports them.

rqlite reads rows through Go's ``database/sql`` with the go-sqlite3 driver, and both
shape what clients see (rqlite ``db/db.go`` ``queryStmtWithConn``, go-sqlite3
``SQLiteRows.Next``):

* ``types`` are the columns' declared types, lowercased ("int", "number(5)",
  "varchar(36)"); a column without one (an expression) takes the storage class of its
  value in the first row ("integer", "real", "text", "blob"), or stays "" if that value
  is NULL or there are no rows;
* in a column declared ``date``, ``datetime`` or ``timestamp``, integers (Unix seconds,
  or milliseconds beyond 1e12) and text (in one of go-sqlite3's layouts) become RFC 3339
  timestamps; text in none of them becomes Go's zero time;
* in a column declared ``boolean``, integers become ``true``/``false``;
* a BLOB in a column with text affinity per rqlite (text, json, varchar..., clob, or no
  declared type) is returned as text, not base64; elsewhere it stays bytes (base64 on
  the wire).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from operator import itemgetter
from typing import Any

_TIME_TYPES = frozenset({"date", "datetime", "timestamp"})
_TEXT_PREFIXES = ("varchar", "varying character", "nchar", "native character", "nvarchar", "clob")
# go-sqlite3's SQLiteTimestampFormats, in its order, as patterns with Go's parsing rules:
# a fraction (any number of digits, "." or ",") may follow the seconds of every layout
# that has seconds, the hour may have one digit, everything else is fixed width.
_DATE = r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
_CLOCK = r"(?P<h>\d{1,2}):(?P<mi>\d{2})"
_SECONDS = r":(?P<s>\d{2})(?:[.,](?P<f>\d+))?"
_OFFSET = r"(?P<sign>[+-])(?P<oh>\d{2}):(?P<om>\d{2})"
_LAYOUTS = (
    [
        re.compile(f"{_DATE}{sep}{_CLOCK}{_SECONDS}{tz}")
        for tz in (_OFFSET, "")
        for sep in (" ", "T")
    ]
    + [re.compile(f"{_DATE}{sep}{_CLOCK}") for sep in (" ", "T")]
    + [re.compile(_DATE)]
)
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RqliteValueError(ValueError):
    """A value rqlite cannot encode (a time outside Go's years 0-9999); the message is
    the one rqlite answers for the statement."""


def _rfc3339(t: datetime, nanos: int) -> str:
    """Go's ``Time.MarshalText`` (RFC 3339, fraction without trailing zeros)."""
    if not 0 <= t.year <= 9999:
        raise RqliteValueError("Time.MarshalText: year outside of range [0,9999]")
    out = t.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        out += "." + f"{nanos:09d}".rstrip("0")
    offset = t.utcoffset() or timedelta(0)
    if not offset:
        return out + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{out}{sign}{hours:02d}:{mins:02d}"


def _from_text(text: str) -> str:
    """go-sqlite3 reading a TEXT value of a time column, then Go printing it."""
    text = text.removesuffix("Z")
    for layout in _LAYOUTS:
        m = layout.fullmatch(text)
        if m is None:
            continue
        parts = m.groupdict()
        try:
            if int(parts.get("h") or 0) > 23:
                continue
            when = datetime(
                int(parts["y"]),
                int(parts["mo"]),
                int(parts["d"]),
                int(parts.get("h") or 0),
                int(parts.get("mi") or 0),
                int(parts.get("s") or 0),
                tzinfo=UTC,
            )
        except ValueError:  # month, day, minute or second out of range: Go refuses too
            continue
        nanos = int((parts.get("f") or "0")[:9].ljust(9, "0"))
        if parts.get("sign"):
            oh, om = int(parts["oh"]), int(parts["om"])
            if oh > 24 or om > 60:
                continue
            if oh * 60 + om >= 24 * 60:  # Go parses it, then cannot print it
                raise RqliteValueError("Time.MarshalText: timezone hour outside of range [0,23]")
            offset = timedelta(hours=oh, minutes=om) * (-1 if parts["sign"] == "-" else 1)
            when = when.replace(tzinfo=timezone(offset)) if offset else when
        return _rfc3339(when, nanos)
    return _GO_ZERO_TIME


def _from_integer(value: int) -> str:
    """go-sqlite3 reading an INTEGER of a time column (seconds, or milliseconds if
    beyond 1e12 either way), then Go printing it in UTC."""
    if value > 10**12 or value < -(10**12):
        # Go multiplies by 1e6 in int64, wrapping on overflow as Go does.
        nanos = (value * 1_000_000 + 2**63) % 2**64 - 2**63
        seconds, nanos = divmod(nanos, 10**9)
    else:
        seconds, nanos = value, 0
    try:
        when = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:  # beyond Python's years 1-9999, so beyond Go's [0,9999] too
        raise RqliteValueError("Time.MarshalText: year outside of range [0,9999]") from None
    return _rfc3339(when, nanos)


def _is_text_type(declared: str) -> bool:
    return declared in ("text", "json", "") or declared.startswith(_TEXT_PREFIXES)


def _storage_type(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, bytes):
        return "blob"
    return "text"


def _go_text(data: bytes) -> str:
    """Bytes as the text Go's JSON encoder writes: each byte that is not part of valid
    UTF-8 becomes U+FFFD."""
    out = []
    while data:
        try:
            out.append(data.decode())
            break
        except UnicodeDecodeError as exc:
            out.append(data[: exc.start].decode())
            out.append("\ufffd" * (exc.end - exc.start))
            data = data[exc.end :]
    return "".join(out)


def _time(value: Any) -> Any:
    if type(value) is int:
        return _from_integer(value)
    if type(value) is str:
        return _from_text(value)
    return value


def types_and_values(
    declared: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[list[str], list[list[Any]]]:
    """``types`` and ``values`` of a result whose columns have the ``declared`` types
    (lowercased) and whose rows SQLite returned (raises :class:`RqliteValueError`)."""
    times = [i for i, d in enumerate(declared) if d in _TIME_TYPES]
    flags = [i for i, d in enumerate(declared) if d == "boolean"]
    # A BLOB in a text column is rare: look for one at C speed before converting.
    texts = [
        i
        for i, d in enumerate(declared)
        if _is_text_type(d) and bytes in set(map(type, map(itemgetter(i), rows)))
    ]
    values = [list(row) for row in rows]
    if times or flags or texts:
        for row in values:
            for i in times:
                row[i] = _time(row[i])
            for i in flags:
                if type(row[i]) is int:
                    row[i] = row[i] > 0
            for i in texts:
                if type(row[i]) is bytes:
                    row[i] = _go_text(row[i])
    types = list(declared)
    if values and "" in types:
        first = values[0]
        types = [t or _storage_type(first[i]) for i, t in enumerate(types)]
    return types, values
