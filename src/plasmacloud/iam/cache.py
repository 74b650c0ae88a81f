"""What a verifier keeps of IAM's answers: values per key for a while, fetched once.

A service asks IAM only to fill this cache, never once per request: a value is used for
its time to live, concurrent misses for one key share a single fetch, and while IAM is
unreachable the last value is kept for a bounded time (then the fetch's error surfaces,
so a service fails closed instead of deciding forever with what it knew).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from plasmacloud.iam.upstream import IamUnavailable

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Values by key, each kept ``ttl_of(value)`` seconds after it was fetched."""

    def __init__(
        self,
        ttl_of: Callable[[V], float],
        clock: Callable[[], float],
        max_stale: float = float("inf"),
        max_entries: int = 10_000,
    ):
        self._ttl_of = ttl_of
        self._clock = clock
        self._max_stale = max_stale
        self._max_entries = max_entries
        self._values: dict[K, tuple[float, V]] = {}
        self._inflight: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        """The cached value if still fresh, else ``fetch()``'s (shared by concurrent callers)."""
        hit = self._values.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl_of(hit[1]):
            return hit[1]
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(key, fetch, hit))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _refresh(
        self, key: K, fetch: Callable[[], Awaitable[V]], hit: tuple[float, V] | None
    ) -> V:
        now = self._clock()
        try:
            value = await fetch()
        except IamUnavailable:
            if hit is not None and now - hit[0] <= self._max_stale:
                return hit[1]  # keep deciding with what we know while IAM is away
            raise
        if len(self._values) >= self._max_entries:  # bound memory under many distinct keys
            self._values.clear()
        self._values[key] = (now, value)
        return value
