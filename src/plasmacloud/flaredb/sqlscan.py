"""A small SQLite tokenizer and the checks FlareDB runs on SQL before replicating it.

Every replica applies the same SQL text, so anything whose value depends on the node
or the moment it runs would make replicas diverge. Before a write enters the Raft log
the proposing node rewrites the clock away (``CURRENT_TIMESTAMP`` and ``'now'`` become
literals chosen once, on that node) and rejects what cannot be made deterministic.
``random()``/``randomblob()`` are left in the text: the state machine replaces them with
a generator seeded by a value the proposer put in the log entry (so they also work in
``DEFAULT`` clauses and triggers).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^']|'')*(?:'|\Z))
  | (?P<blob>[xX]'[0-9A-Fa-f]*')
  | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|0[xX][0-9A-Fa-f]+)
  | (?P<param>\?\d*|[:@$][A-Za-z_][A-Za-z0-9_]*)
  | (?P<word>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)
  | (?P<op>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # space comment string blob quoted number param word op
    text: str
    start: int
    end: int


def tokenize(sql: str) -> list[Token]:
    """Split SQL into tokens; every character belongs to exactly one token."""
    out = []
    for m in _TOKEN_RE.finditer(sql):
        kind = m.lastgroup or "op"
        out.append(Token(kind, m.group(), m.start(), m.end()))
    return out


def _code(tokens: list[Token]) -> list[Token]:
    return [t for t in tokens if t.kind not in ("space", "comment")]


class NonDeterministicError(ValueError):
    """The statement cannot be replicated as written; the message names the reason."""


_TIME_KEYWORDS = {
    "CURRENT_TIMESTAMP": "%Y-%m-%d %H:%M:%S",
    "CURRENT_DATE": "%Y-%m-%d",
    "CURRENT_TIME": "%H:%M:%S",
}
_DATE_FUNCTIONS = {"DATE", "TIME", "DATETIME", "JULIANDAY", "UNIXEPOCH", "STRFTIME", "TIMEDIFF"}
# Functions that need at least one argument before 'now' is implied (strftime(fmt, ...)).
_MIN_ARGS_FOR_NOW = {"STRFTIME": 1, "TIMEDIFF": 2}
_REJECTED_FUNCTIONS = {
    "CHANGES": "its value depends on the statements this node's connection ran before",
    "TOTAL_CHANGES": "its value depends on how long this node's connection has been open",
    "LAST_INSERT_ROWID": "its value depends on this node's connection history; "
    "use INSERT ... RETURNING instead",
    "LOAD_EXTENSION": "extensions are node-local files",
    "SQLITE_OFFSET": "it depends on the physical file layout of each replica",
}
_REJECTED_FIRST_WORDS = {
    "ATTACH": "ATTACH opens a node-local file",
    "DETACH": "DETACH applies to node-local files",
    "BEGIN": "explicit transactions are not supported; send the statements in one request "
    "with ?transaction",
    "COMMIT": "explicit transactions are not supported; use ?transaction",
    "END": "explicit transactions are not supported; use ?transaction",
    "ROLLBACK": "explicit transactions are not supported; use ?transaction",
    "SAVEPOINT": "savepoints are not supported; use ?transaction",
    "RELEASE": "savepoints are not supported; use ?transaction",
    "PRAGMA": "PRAGMA settings are per connection and would not survive a restart or reach "
    "every replica",
    "VACUUM": "VACUUM rewrites the file outside the replicated log",
}
_READ_FIRST_WORDS = {"SELECT", "VALUES", "EXPLAIN", "PRAGMA"}
_WRITE_WORDS = {"INSERT", "UPDATE", "DELETE", "REPLACE"}
# PRAGMAs a query may run with an argument; any other PRAGMA with '=' or '(...)' sets
# something on the node's read connection and is refused.
_READ_PRAGMAS = {
    "TABLE_INFO",
    "TABLE_XINFO",
    "TABLE_LIST",
    "INDEX_LIST",
    "INDEX_INFO",
    "INDEX_XINFO",
    "FOREIGN_KEY_LIST",
    "FOREIGN_KEY_CHECK",
    "INTEGRITY_CHECK",
    "QUICK_CHECK",
}
# Cheap pre-check: SQL matching none of these has nothing to rewrite or reject except,
# possibly, its first word (bulk inserts take this path; the full scan costs ~40 us).
# Not \b before the names: the tokenizer ends a number at a letter, so "1CURRENT_DATE" is
# a number and a keyword, while a word character before a name is part of one word.
_SUSPECT_RE = re.compile(
    r"(?<![A-Za-z_$\x80-\U0010ffff])"
    r"(?:current_\w+|date|time|datetime|julianday|unixepoch|strftime|timediff|changes|"
    r"total_changes|last_insert_rowid|load_extension|sqlite_offset)\b|now|--|/\*",
    re.IGNORECASE,
)
_FIRST_WORD_RE = re.compile(r"\s*([A-Za-z_]+)")


@dataclass(slots=True)
class _Paren:
    """An open parenthesis while scanning: the function it belongs to, if any."""

    function: str
    opened_at: int
    commas: int = 0


def is_read_only(sql: str) -> bool:
    """True for statements that only read (SELECT, VALUES, EXPLAIN, PRAGMA, WITH ... SELECT).

    ``/db/request`` uses this to send reads down the query path and writes through Raft.
    """
    words = [t.text.upper() for t in _code(tokenize(sql)) if t.kind == "word"]
    if not words:
        return False
    if words[0] in _READ_FIRST_WORDS:
        return "RETURNING" not in words
    if words[0] == "WITH":
        return not _WRITE_WORDS.intersection(words)
    return False


def check_query(sql: str) -> None:
    """Refuse queries that would change the node's read connection (FlareDB's own tables
    are sealed by the store's authorizer, see ``flaredb.authorizer``)."""
    code = _code(tokenize(sql))
    if code and code[0].kind == "word" and code[0].text.upper() == "PRAGMA":
        names = [t for t in code[1:] if t.kind in ("word", "quoted")]
        # "PRAGMA schema.name" names the pragma last.
        name = names[1].text if len(names) > 1 and code[2].text == "." else ""
        name = (name or (names[0].text if names else "")).upper()
        sets = any(t.text in ("=", "(") for t in code[1:])
        if sets and name not in _READ_PRAGMAS:
            raise NonDeterministicError(
                f"PRAGMA {name.lower()} with a value changes node-local settings; "
                "queries may only read PRAGMAs"
            )


def make_deterministic(sql: str, now: datetime | None = None) -> str:
    """Rewrite a write statement so every replica computes the same result.

    ``CURRENT_TIMESTAMP``/``CURRENT_DATE``/``CURRENT_TIME`` and ``'now'`` (or an
    omitted time argument) in date functions become literals of ``now`` (UTC, chosen
    once by the caller). Functions and statements whose effect depends on the node are
    rejected with :class:`NonDeterministicError`. Schema statements may not contain the
    clock (a ``DEFAULT CURRENT_TIMESTAMP`` would be evaluated by each replica later).
    """
    if not _SUSPECT_RE.search(sql):
        m = _FIRST_WORD_RE.match(sql)
        if m and m.group(1).upper() not in _REJECTED_FIRST_WORDS:
            return sql
    return rewrite_full(sql, now or datetime.now(UTC))


def rewrite_full(sql: str, now: datetime) -> str:
    """:func:`make_deterministic` without its fast path (tests check they agree)."""
    tokens = tokenize(sql)
    code = _code(tokens)
    if not code:
        return sql
    head = code[0].text.upper() if code[0].kind == "word" else ""
    if head in _REJECTED_FIRST_WORDS:
        raise NonDeterministicError(f"{head} cannot be replicated: {_REJECTED_FIRST_WORDS[head]}")
    is_schema = head in ("CREATE", "ALTER")
    if is_schema and any(t.kind == "word" and t.text.upper() == "VIEW" for t in code[:4]):
        return sql  # a view is evaluated when read, on the node that reads it
    replacements: dict[int, str] = {}  # token index in `code` -> new text
    inserts: dict[int, str] = {}  # token index in `code` -> text inserted before it
    now_literal = "'" + now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}'"
    stack: list[_Paren] = []
    for i, t in enumerate(code):
        upper = t.text.upper()
        if t.kind == "word":
            nxt = code[i + 1].text if i + 1 < len(code) else ""
            if nxt == "(" and upper in _REJECTED_FUNCTIONS:
                raise NonDeterministicError(
                    f"{upper.lower()}() cannot be replicated: {_REJECTED_FUNCTIONS[upper]}"
                )
            if upper in _TIME_KEYWORDS and nxt != "(":
                replacements[i] = "'" + now.strftime(_TIME_KEYWORDS[upper]) + "'"
        elif t.text == "(":
            prev = code[i - 1] if i else None
            fname = prev.text.upper() if prev is not None and prev.kind == "word" else ""
            stack.append(_Paren(fname, i))
        elif t.text == "," and stack:
            stack[-1].commas += 1
        elif t.text == ")" and stack:
            paren = stack.pop()
            if paren.function in _DATE_FUNCTIONS:
                nargs = 0 if i == paren.opened_at + 1 else paren.commas + 1
                if nargs == _MIN_ARGS_FOR_NOW.get(paren.function, 0):
                    # A date function without its time argument means 'now'.
                    inserts[i] = (", " if nargs else "") + now_literal
        elif t.kind == "string" and stack and stack[-1].function in _DATE_FUNCTIONS:
            if upper in ("'LOCALTIME'", "'UTC'"):
                raise NonDeterministicError(
                    f"the {t.text} date modifier depends on each node's time zone; "
                    "store UTC and convert when reading"
                )
            if upper == "'NOW'":
                replacements[i] = now_literal
    if not replacements and not inserts:
        return sql
    if is_schema:
        raise NonDeterministicError(
            "schema statements cannot use the current time (CURRENT_TIMESTAMP, 'now'): "
            "each replica would evaluate it at a different moment; "
            "set the value in the INSERT instead"
        )
    out = []
    pos = 0
    for i, t in enumerate(code):
        if i in inserts:
            out.append(sql[pos : t.start] + inserts[i])
            pos = t.start
        if i in replacements:
            out.append(sql[pos : t.start] + replacements[i])
            pos = t.end
    out.append(sql[pos:])
    return "".join(out)


def split_statements(script: str) -> list[str]:
    """Split a script at top-level ``;`` into complete statements (triggers kept whole)."""
    out: list[str] = []
    current = ""
    for t in tokenize(script):
        current += t.text
        if t.text == ";" and sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip() and _code(tokenize(current)):
        out.append(current.strip())
    return [s for s in out if _code(tokenize(s.rstrip(";")))]
