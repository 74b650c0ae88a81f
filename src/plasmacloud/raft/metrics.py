"""Prometheus metrics of one Raft node (registered only when the service passes a registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FSYNC_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 1.0)


class RaftMetrics:
    """The raft_* series; every update is per batch, never per entry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.term = Gauge("raft_term", "Current Raft term", registry=r)
        self.is_leader = Gauge("raft_is_leader", "1 if this node is the leader", registry=r)
        self.leader_changes = Counter(
            "raft_leader_changes", "Times the known leader changed", registry=r
        )
        self.committed = Counter(
            "raft_proposals_committed", "Proposals committed and applied here", registry=r
        )
        self.pending = Gauge("raft_proposals_pending", "Proposals waiting to commit", registry=r)
        self.failed = Counter("raft_proposals_failed", "Proposals that failed", registry=r)
        self.fsync = Histogram(
            "raft_fsync_duration_seconds",
            "Log fdatasync latency",
            buckets=_FSYNC_BUCKETS,
            registry=r,
        )
        self.apply = Histogram(
            "raft_apply_duration_seconds",
            "State machine apply latency per batch",
            buckets=_FSYNC_BUCKETS,
            registry=r,
        )
        self.commit_index = Gauge("raft_commit_index", "Commit index", registry=r)
        self.applied_index = Gauge("raft_applied_index", "Applied index", registry=r)
        self.snapshots = Counter(
            "raft_snapshots", "Snapshots taken here (each compacts the log)", registry=r
        )
        self.snapshot_index = Gauge(
            "raft_snapshot_index", "Last index in the newest snapshot stored here", registry=r
        )
