"""FlareDB: Raft-replicated SQL on SQLite with an rqlite-compatible HTTP API.

Modules: ``models`` (the wire format, shared by server and client), ``sqlscan`` (the
determinism rewriter), ``command`` (one Raft entry), ``store`` (the SQLite state
machine), ``http_api`` (the rqlite endpoints), ``auth`` (optional IAM enforcement),
``server`` (a node from ``cluster-config.json``), ``client`` (DB-API style client),
``probe`` (cluster view for the lab), ``metrics``.

Where FlareDB knowingly differs from rqlite 8:

* result ``types`` come from the values (a column's first non-NULL value: integer, real,
  text, blob), not from declared column types;
* ``?queue``/``?wait`` are accepted and the write is simply done synchronously;
  ``?freshness`` on ``level=none`` only refuses when the node knows no leader;
* statements that cannot be replayed identically are rewritten (the clock: ``'now'``,
  ``CURRENT_TIMESTAMP``...) or refused with a 400 naming the reason (``changes()``,
  ``last_insert_rowid()``, ``'localtime'``, explicit ``BEGIN``/``COMMIT``, ``PRAGMA``
  writes, ``ATTACH``); ``random()``/``randomblob()`` are seeded per log entry;
* one request is one Raft entry: bodies and entries above 16 MiB answer 413, and a
  replicated statement stops after a fixed number of SQLite steps (identical on every
  replica, so they never diverge over it);
* with ``serve --iam-url`` the ``/db/*`` endpoints require an IAM token (Bearer, or
  Basic user:password as rqlite clients send it) allowing ``flaredb:Query`` /
  ``flaredb:Execute`` on ``db/main``.
"""
