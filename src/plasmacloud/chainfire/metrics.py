"""Chainfire's Prometheus metrics (served on the metrics port with the engine's own).

Raft term, leadership, proposals and the fsync/apply durations come from the engine,
registered in the same registry (``RaftConfig.registry``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


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
        self.frontend_workers = Gauge(
            "chainfire_frontend_workers",
            "Frontend worker processes running (--frontends)",
            registry=registry,
        )
        self.frontend_restarts = Counter(
            "chainfire_frontend_restarts",
            "Frontend workers that exited and were started again",
            registry=registry,
        )
        self._request_counters: dict[tuple[str, str], Counter] = {}

    def request_counter(self, method: str, code: str) -> Counter:
        """The request counter child for one (method, code), looked up once per pair."""
        key = (method, code)
        child = self._request_counters.get(key)
        if child is None:
            child = self._request_counters[key] = self.grpc_requests.labels(method, code)
        return child
