"""FlareDB: Raft-replicated SQL on SQLite with an rqlite-compatible HTTP API."""
