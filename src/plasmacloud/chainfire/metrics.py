"""Chainfire's Prometheus metrics (served on the metrics port with the engine's own)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plasmacloud.raft.api import Entry, StateMachine


class ChainfireMetrics:
    """Every metric Chainfire itself exports, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.grpc_requests = Counter(
            "chainfire_grpc_requests",
            "gRPC requests handled, by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.watchers = Gauge(
            "chainfire_watchers", "Active watchers on this member", registry=registry
        )
        self.leases = Gauge("chainfire_leases", "Live leases", registry=registry)
        self.db_size = Gauge(
            "chainfire_db_size_bytes", "Size of the MVCC database files", registry=registry
        )
        self.revision = Gauge(
            "chainfire_revision", "Current MVCC revision on this member", registry=registry
        )
        self.apply_seconds = Histogram(
            "chainfire_apply_duration_seconds",
            "Time to apply one batch of committed entries to the MVCC store",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.apply_entries = Counter(
            "chainfire_applied_entries", "Committed entries applied", registry=registry
        )


class TimedStateMachine:
    """Wraps the store so the engine's apply calls are timed (same StateMachine contract)."""

    def __init__(self, inner: StateMachine, metrics: ChainfireMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def apply(self, entries: Sequence[Entry]) -> list[Any]:
        start = time.perf_counter()
        try:
            return self.inner.apply(entries)
        finally:
            self.metrics.apply_seconds.observe(time.perf_counter() - start)
            self.metrics.apply_entries.inc(len(entries))

    def applied_index(self) -> int:
        return self.inner.applied_index()

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes, index: int) -> None:
        self.inner.restore(data, index)
