"""Node-local lease timers.

Which leases exist (and their TTLs) is replicated state kept by the MVCC store; *when*
each one expires is a local clock matter. Every node refreshes its timers when it
applies a grant or a keep-alive, so any node can answer TimeToLive; only the leader acts
on expiry, by proposing a revoke, so the deletion of attached keys is itself replicated.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# etcd's minimum lease TTL with its default 100 ms heartbeat and 10-tick elections.
MIN_TTL = 2
# etcd's MaxLeaseTTL (9,000,000,000 seconds).
MAX_TTL = 9_000_000_000


class LeaseTimers:
    """Monotonic expiry deadlines of the leases this node knows about."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._deadline: dict[int, float] = {}
        self._ttl: dict[int, int] = {}

    def renew(self, lease_id: int, ttl: int) -> None:
        """(Re)start a lease's timer: it expires ``ttl`` seconds from now."""
        with self._lock:
            self._ttl[lease_id] = ttl
            self._deadline[lease_id] = self._clock() + ttl

    def forget(self, lease_id: int) -> None:
        """Drop a revoked lease."""
        with self._lock:
            self._deadline.pop(lease_id, None)
            self._ttl.pop(lease_id, None)

    def reset(self, leases: dict[int, int]) -> None:
        """Restart every timer from now (after a restart, a snapshot or winning leadership).

        A new leader cannot know how much time its predecessor had granted, so like etcd's
        lessor ``Promote`` it gives every lease a full TTL rather than expiring it early.
        """
        now = self._clock()
        with self._lock:
            self._ttl = dict(leases)
            self._deadline = {lid: now + ttl for lid, ttl in leases.items()}

    def remaining(self, lease_id: int) -> int:
        """Whole seconds left, rounded down like etcd's TimeToLive (a lease granted for
        60 s reports 59 right away), or -1 if the lease is unknown."""
        with self._lock:
            deadline = self._deadline.get(lease_id)
        if deadline is None:
            return -1
        return max(0, int(deadline - self._clock()))

    def expired(self) -> list[int]:
        """Leases whose deadline has passed, oldest first."""
        now = self._clock()
        with self._lock:
            due = [(d, lid) for lid, d in self._deadline.items() if d <= now]
        return [lid for _, lid in sorted(due)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._deadline)
