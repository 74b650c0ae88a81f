"""Prometheus metrics of one FlareDB node (its own registry, so nodes in one process
stay apart; the Raft engine registers its metrics in the same registry)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plasmacloud.flaredb.models import ErrorResult, Result


class FlareMetrics:
    """Statement counts by kind and outcome, apply and request latency, db size."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.statements = Counter(
            "flaredb_statements",
            "SQL statements answered, by kind (execute, query) and outcome (ok, error)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.apply_seconds = Histogram(
            "flaredb_apply_seconds",
            "Time to apply one batch of committed log entries to SQLite",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
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
        self.db_size = Gauge(
            "flaredb_db_size_bytes", "SQLite file plus WAL size", registry=self.registry
        )
        self.is_leader = Gauge(
            "flaredb_raft_is_leader",
            "1 when this node leads the FlareDB group",
            registry=self.registry,
        )
        self.term = Gauge("flaredb_raft_term", "Current Raft term", registry=self.registry)
        self.applied_index = Gauge(
            "flaredb_raft_applied_index", "Last applied Raft index", registry=self.registry
        )

    def observe_apply(self, statements: int, seconds: float) -> None:
        """Callback for :class:`~plasmacloud.flaredb.store.SQLiteStore` after each batch."""
        self.apply_seconds.observe(seconds)
        self.applied_statements.inc(statements)

    def count(self, kind: str, results: list[Result]) -> None:
        """Count one request's statements by outcome."""
        errors = sum(1 for r in results if isinstance(r, ErrorResult))
        if errors:
            self.statements.labels(kind, "error").inc(errors)
        if len(results) > errors:
            self.statements.labels(kind, "ok").inc(len(results) - errors)

    def bind(
        self,
        db_size: Callable[[], float],
        is_leader: Callable[[], float],
        term: Callable[[], float],
        applied: Callable[[], float],
    ) -> None:
        """Gauges read at scrape time from the live node."""
        self.db_size.set_function(db_size)
        self.is_leader.set_function(is_leader)
        self.term.set_function(term)
        self.applied_index.set_function(applied)
