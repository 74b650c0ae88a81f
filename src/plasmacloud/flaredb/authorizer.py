"""The SQLite authorizer that seals FlareDB's bookkeeping off from client statements.

FlareDB keeps its applied index in a table of the user's database file (so it commits in
the same transaction as the changes it counts), under the reserved name prefix. SQLite
asks the authorizer about every table, column, index, trigger, view, PRAGMA argument and
savepoint a statement names while it compiles the statement, whichever way the name is
quoted and through any view or trigger the statement reaches: so refusing reserved names
here, rather than scanning the SQL text, covers every spelling.
"""

from __future__ import annotations

import sqlite3

RESERVED_PREFIX = "_flaredb_"

# Statements that would end or split the batch transaction the store applies entries in,
# or reach other files; the HTTP layer already refuses them, this is the state machine's
# own guard for whatever reaches the log.
_WRITE_REFUSED = {
    sqlite3.SQLITE_TRANSACTION: "explicit transactions are not supported; use ?transaction",
    sqlite3.SQLITE_SAVEPOINT: "savepoints are not supported; use ?transaction",
    sqlite3.SQLITE_ATTACH: "ATTACH opens a node-local file",
    sqlite3.SQLITE_DETACH: "DETACH applies to node-local files",
    sqlite3.SQLITE_PRAGMA: "PRAGMA settings are per connection and would not survive a "
    "restart or reach every replica",
}

_COLUMN_ACTIONS = {sqlite3.SQLITE_READ, sqlite3.SQLITE_UPDATE}


def is_reserved(name: str | None) -> bool:
    """True for names FlareDB keeps for itself (any case)."""
    return name is not None and name.lower().startswith(RESERVED_PREFIX)


class Sentry:
    """Authorizer callback of one connection; remembers why it refused a statement, so
    the client gets that reason instead of SQLite's bare "not authorized"."""

    def __init__(self, write: bool) -> None:
        """``write``: the connection applies log entries (transaction control, ATTACH
        and PRAGMAs are refused there too)."""
        self._write = write
        self._reason: str | None = None

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        # Reading or updating names the column second: columns may use any name.
        names = (arg1,) if action in _COLUMN_ACTIONS else (arg1, arg2)
        for name in names:
            if is_reserved(name):
                return self._deny(f"{name} is reserved for FlareDB's own bookkeeping")
        if self._write and action in _WRITE_REFUSED:
            return self._deny(_WRITE_REFUSED[action])
        return sqlite3.SQLITE_OK

    def _deny(self, reason: str) -> int:
        # The first refusal of a statement names it; SQLite may ask about more.
        if self._reason is None:
            self._reason = reason
        return sqlite3.SQLITE_DENY

    def explain(self, message: str) -> str:
        """The error message for a failed statement: the refusal's reason if it was
        refused (the reason is then forgotten), else SQLite's ``message``."""
        reason, self._reason = self._reason, None
        return reason or message
