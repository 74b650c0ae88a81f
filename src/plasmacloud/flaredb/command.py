"""What FlareDB writes into one Raft log entry.

One HTTP request becomes one entry (so a bulk insert or a transaction costs one round of
replication). The entry carries everything the replicas need to reach the same state:
the statements as rewritten by the proposer (in runs of one SQL text, see
:class:`~plasmacloud.flaredb.models.Run`), whether they form one transaction, and the
seed for ``random()``/``randomblob()``, chosen once on the proposing node.

Entry layout (no pickle; every length is checked when decoding)::

    b"FDB\\x02" | u32 header length | header (JSON)
               | u32 string count | u32 length of each string | the strings (UTF-8)

The header is ``{"k": kind, "seed": N, "tx": true?, "g": [run, ...]}``. A run whose
statements all have the same number of positional parameters is stored by column:
``[sql, statements, [column, ...]]`` where a column is ``"s"`` (all strings: taken, in
order, from the string section, so a bulk insert's values are copied rather than
JSON-escaped), a JSON list of the column's values, or ``{"y": [...]}`` for a column
holding BLOBs, each stored as a one-item list ``[base64]`` (no parameter is a list, so
nothing else reads as one). Any other run is ``[sql, statements, null, [params of each
statement]]``, with a fifth item ``true`` if its BLOBs are stored that way. Entries
written by earlier versions (a JSON object, ``{...}``; BLOBs as plain base64 text,
which they then were) still decode as they did.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plasmacloud.flaredb.models import (
    Params,
    RequestError,
    Run,
    Statement,
    group_runs,
    statement_count,
)

# Seeds need to differ between entries, not to be secret (random() is a Mersenne Twister
# seeded with them either way); one os.urandom-seeded generator avoids a syscall per write.
_SEEDS = random.Random()
EXECUTE = "execute"
LOAD = "load"  # replace the whole database with the statements (a dump)

_MAGIC = b"FDB\x02"
_HEAD = struct.Struct("<4sI")
_COUNT = struct.Struct("<I")
_STRING_COLUMN = "s"
_BLOB_COLUMN = "y"
# The string section is UTF-8 with lone surrogates kept (JSON can carry "\ud800"), so
# every Python str round-trips exactly; SQLite then refuses such a value as it would have.
_UTF8_ERRORS = "surrogatepass"


_BINARY_TYPES = frozenset((bytes, bytearray, memoryview))


def _lengths(strings: Sequence[str]) -> array[int]:
    out = array("I", map(len, strings))
    if sys.byteorder == "big":
        out.byteswap()
    return out


@dataclass(frozen=True, slots=True)
class Command:
    """A batch of statements applied together on every replica."""

    runs: tuple[Run, ...]
    transaction: bool = False
    seed: int = 0
    kind: str = EXECUTE

    @classmethod
    def new(
        cls, statements: Sequence[Statement], transaction: bool = False, kind: str = EXECUTE
    ) -> Command:
        """A command with a fresh random seed (call on the proposing node only)."""
        return cls.from_runs(group_runs(statements), transaction, kind)

    @classmethod
    def from_runs(
        cls, runs: Sequence[Run], transaction: bool = False, kind: str = EXECUTE
    ) -> Command:
        """:meth:`new` for statements already grouped into runs."""
        return cls(tuple(runs), transaction, _SEEDS.getrandbits(63), kind)

    @property
    def statements(self) -> tuple[Statement, ...]:
        """Every statement, in order (one object each: for tests and small batches)."""
        return tuple(s for run in self.runs for s in run.statements())

    def __len__(self) -> int:
        return statement_count(self.runs)

    def encode(self) -> bytes:
        """The entry's bytes (see the module docstring)."""
        strings: list[Sequence[str]] = []
        header: dict[str, Any] = {
            "k": self.kind,
            "seed": self.seed,
            "g": [_encode_run(run, strings) for run in self.runs],
        }
        if self.transaction:
            header["tx"] = True
        head = json.dumps(header, separators=(",", ":")).encode()
        every = list(itertools.chain.from_iterable(strings))
        text = "".join(every).encode("utf-8", _UTF8_ERRORS)
        return b"".join(
            (
                _HEAD.pack(_MAGIC, len(head)),
                head,
                _COUNT.pack(len(every)),
                _lengths(every).tobytes(),
                text,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Command:
        """Read an entry back; raises :class:`RequestError` on anything malformed."""
        try:
            if data[:1] == b"{":
                return _decode_json(data)
            return _decode(data)
        except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
            raise RequestError(f"malformed log entry: {exc}") from exc


def _encode_run(run: Run, strings: list[Sequence[str]]) -> list[Any]:
    params = run.params
    widths = set(map(len, params))
    if set(map(type, params)) == {tuple} and len(widths) == 1:
        columns: list[Any] = []
        for column in zip(*params, strict=True):
            types = set(map(type, column))
            if types == {str}:
                strings.append(column)
                columns.append(_STRING_COLUMN)
            elif types.isdisjoint(_BINARY_TYPES):
                columns.append(column)
            else:
                columns.append({_BLOB_COLUMN: list(map(_tag, column))})
        return [run.sql, len(params), columns]
    rows = [
        {k: _tag(v) for k, v in p.items()} if isinstance(p, dict) else list(map(_tag, p))
        for p in params
    ]
    blobs = any(
        type(v) in _BINARY_TYPES for p in params for v in (p.values() if isinstance(p, dict) else p)
    )
    return [run.sql, len(params), None, rows, True] if blobs else [run.sql, len(params), None, rows]


def _tag(value: Any) -> Any:
    """A parameter as the entry stores it: a BLOB as ``[base64]``."""
    if type(value) in _BINARY_TYPES:
        return [base64.b64encode(value).decode("ascii")]
    return value


def _untag(value: Any) -> Any:
    if type(value) is list:
        return base64.b64decode(value[0], validate=True)
    return value


def _decode(data: bytes) -> Command:
    view = memoryview(data)
    magic, head_len = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise ValueError(f"unknown entry format {bytes(magic)!r}")
    pos = _HEAD.size
    if pos + head_len > len(view):
        raise ValueError("header runs past the end of the entry")
    header = json.loads(view[pos : pos + head_len].tobytes())
    pos += head_len
    (count,) = _COUNT.unpack_from(view, pos)
    pos += _COUNT.size
    if pos + 4 * count > len(view):
        raise ValueError("string lengths run past the end of the entry")
    lengths = array("I")
    lengths.frombytes(view[pos : pos + 4 * count])
    if sys.byteorder == "big":
        lengths.byteswap()
    text = str(view[pos + 4 * count :], "utf-8", _UTF8_ERRORS)
    ends = list(itertools.accumulate(lengths))
    if (ends[-1] if ends else 0) != len(text):
        raise ValueError("string lengths do not add up to the string section")
    strings = list(map(text.__getitem__, map(slice, [0, *ends], ends)))
    taken = 0
    runs = []
    for desc in header["g"]:
        sql, n, columns = desc[0], desc[1], desc[2]
        if not isinstance(sql, str) or not isinstance(n, int) or n < 0:
            raise ValueError(f"bad run {str(desc)[:80]}")
        params: tuple[Params, ...]
        if columns is None:
            rows = desc[3]
            if len(desc) > 4 and desc[4]:
                rows = [
                    {k: _untag(v) for k, v in p.items()}
                    if isinstance(p, dict)
                    else list(map(_untag, p))
                    for p in rows
                ]
            params = tuple(p if isinstance(p, dict) else tuple(p) for p in rows)
        else:
            values = []
            for column in columns:
                if column == _STRING_COLUMN:
                    column = strings[taken : taken + n]
                    taken += n
                elif isinstance(column, dict):
                    column = list(map(_untag, column[_BLOB_COLUMN]))
                values.append(column)
            params = tuple(zip(*values, strict=True)) if values else ((),) * n
        if len(params) != n:
            raise ValueError(f"run of {n} statements holds {len(params)}")
        runs.append(Run(sql, params))
    if taken != len(strings):
        raise ValueError(f"{len(strings)} strings stored, {taken} used")
    return Command(tuple(runs), bool(header.get("tx", False)), int(header["seed"]), header["k"])


def _decode_json(data: bytes) -> Command:
    """An entry in the JSON format of earlier versions."""
    doc = json.loads(data)
    kind = doc["k"]
    stmts: list[Statement]
    if "g" in doc:
        # Validated by the proposer before encoding, so no second check per value.
        stmts = [
            Statement(sql, p if isinstance(p, dict) else tuple(p))
            for sql, params in doc["g"]
            for p in params
        ]
    else:  # entries written before runs were grouped
        stmts = [Statement.from_json(s, i) for i, s in enumerate(doc["s"], start=1)]
    return Command(tuple(group_runs(stmts)), bool(doc.get("tx", False)), int(doc["seed"]), kind)
