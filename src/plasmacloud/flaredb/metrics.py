"""Prometheus metrics of one FlareDB node (its own registry, so nodes in one process
stay apart). The Raft engine registers its own in the same registry (``raft_term``,
``raft_is_leader``, ``raft_applied_index``, ``raft_apply_duration_seconds``, ...), so
only what is FlareDB's is defined here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plasmacloud.flaredb.models import ErrorResult, Result


class FlareMetrics:
    """Statement counts by kind and outcome, applied statements, request latency, db size."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.statements = Counter(
            "flaredb_statements",
            "SQL statements answered, by kind (execute, query) and outcome (ok, error)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.applied_statements = Counter(
            "flaredb_applied_statements",
            "Statements applied from the Raft log on this node",
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "flaredb_http_request_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.apply_failed = Gauge(
            "flaredb_apply_failed",
            "1 once applying committed log entries raised: the node stopped (see its log)",
            registry=self.registry,
        )
        self._children: dict[str, tuple[Any, Any, Any]] = {}
        self.db_size = Gauge(
            "flaredb_db_size_bytes", "SQLite file plus WAL size", registry=self.registry
        )

    def observe_apply(self, statements: int) -> None:
        """Callback for :class:`~plasmacloud.flaredb.store.SQLiteStore` after each batch
        (its duration is the engine's ``raft_apply_duration_seconds``)."""
        self.applied_statements.inc(statements)

    def count(self, kind: str, results: list[Result], seconds: float) -> None:
        """Count one request's statements by outcome and observe its latency."""
        # labels() looks the child up under a lock each time; keep them (hot path).
        children = self._children.get(kind)
        if children is None:
            children = self._children[kind] = (
                self.statements.labels(kind, "ok"),
                self.statements.labels(kind, "error"),
                self.request_seconds.labels(kind),
            )
        ok, failed, latency = children
        errors = sum(1 for r in results if isinstance(r, ErrorResult))
        if errors:
            failed.inc(errors)
        if len(results) > errors:
            ok.inc(len(results) - errors)
        latency.observe(seconds)

    def bind(self, db_size: Callable[[], float]) -> None:
        """Gauges read at scrape time from the live node."""
        self.db_size.set_function(db_size)
