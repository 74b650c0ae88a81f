"""The declared types of a statement's result columns (``sqlite3_column_decltype``).

rqlite reports them as ``types`` ("int", "number(5)", "datetime"; "" for an expression),
and clients pick their converters by them. Python's ``sqlite3`` module reads them only
for its own ``PARSE_DECLTYPES`` and does not expose them, so they are asked of SQLite
directly: the statement is compiled once more on the same connection (same schema,
same open transaction) through ``ctypes`` and its column declared types read, which
costs about one more compile (~10 us) per statement that returns rows.

That needs the ``sqlite3 *`` of a ``sqlite3.Connection`` (the first field after the
object header in CPython 3.11-3.13) and the SQLite library ``_sqlite3`` itself loaded.
Where either is missing (a Python that links SQLite statically), every declared type is
"" and the store falls back to the value types of the first row, which is what rqlite
does for expressions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sqlite3
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_HANDLE_OFFSET = object.__basicsize__  # PyObject_HEAD, then `sqlite3 *db`


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:
    """The SQLite library Python's ``_sqlite3`` runs on, if it is a shared one."""
    if sys.implementation.name != "cpython" or not hasattr(os, "RTLD_NOLOAD"):
        return None
    name = ctypes.util.find_library("sqlite3") or "libsqlite3.so.0"
    try:
        # NOLOAD: only the copy already in this process (another copy's handles differ).
        lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD)
    except OSError:
        return None
    lib.sqlite3_libversion.restype = ctypes.c_char_p
    if lib.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return None
    lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.sqlite3_db_filename.restype = ctypes.c_char_p
    lib.sqlite3_prepare_v2.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_void_p,
    ]
    lib.sqlite3_column_count.argtypes = [ctypes.c_void_p]
    lib.sqlite3_column_decltype.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.sqlite3_column_decltype.restype = ctypes.c_char_p
    lib.sqlite3_finalize.argtypes = [ctypes.c_void_p]
    return lib


class DeclaredTypes:
    """Declared result column types of statements run on one connection."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """``path`` is the file ``conn`` opened: the handle found is checked against it."""
        self._lib = _library()
        self._db: int | None = None
        if self._lib is None:
            log.warning("SQLite is not a shared library here: types fall back to values")
            return
        db = ctypes.c_void_p.from_address(id(conn) + _HANDLE_OFFSET).value
        opened = self._lib.sqlite3_db_filename(db, b"main") if db else None
        if opened is None or os.path.realpath(opened.decode()) != os.path.realpath(path):
            log.warning("cannot find the SQLite handle of %s: types fall back to values", path)
            return
        self._db = db

    def of(self, sql: str, width: int) -> list[str]:
        """The declared types (lowercased, "" where none) of ``sql``'s ``width`` result
        columns, as compiled against the connection's current schema."""
        if self._lib is None or self._db is None:
            return [""] * width
        stmt = ctypes.c_void_p()
        text = sql.encode("utf-8", "surrogatepass")
        if self._lib.sqlite3_prepare_v2(self._db, text, len(text), ctypes.byref(stmt), None):
            return [""] * width
        try:
            if self._lib.sqlite3_column_count(stmt) != width:
                return [""] * width
            return [
                (self._lib.sqlite3_column_decltype(stmt, i) or b"").decode().lower()
                for i in range(width)
            ]
        finally:
            self._lib.sqlite3_finalize(stmt)
