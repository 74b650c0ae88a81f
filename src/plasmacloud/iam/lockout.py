"""Brute-force protection for everything that checks a password or client secret.

Two layers: a per-client-IP token bucket of *failed* attempts kept in each node's memory
(answers 429 before any hashing is spent; successes cost nothing), and a per-account
failure counter kept in the store, so that spreading guesses over the three IAM nodes
does not help: after ``max_failures`` consecutive failures the account is locked for
``lock_seconds`` (doubling on each further lock, capped), and even the right password is
refused while it is locked. Unknown accounts get no counter, so guessing names cannot
fill the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from plasmacloud.iam.store import KVStore

LOCKOUT_PREFIX = "/plasmacloud/iam/lockout/"


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Limits; the defaults suit an interactive login."""

    max_failures: int = 5
    lock_seconds: float = 60.0
    max_lock_seconds: float = 3600.0
    ip_burst: int = 20
    ip_per_second: float = 1.0


class IpFailureLimiter:
    """Token bucket of *failed* attempts per client address (in memory, per node, bounded).

    Only failures take tokens, so a busy legitimate client (a service logging in again
    and again from one address) is never slowed; a guesser is, after ``burst`` misses.
    """

    def __init__(self, burst: int, per_second: float, clock: Callable[[], float] = time.monotonic):
        self._burst = burst
        self._rate = per_second
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, ip: str) -> float:
        now = self._clock()
        tokens, last = self._buckets.get(ip, (float(self._burst), now))
        return min(float(self._burst), tokens + (now - last) * self._rate)

    def blocked(self, ip: str) -> bool:
        """Whether ``ip`` used up its failures (answer 429 before any hashing is spent)."""
        return self._tokens(ip) < 1.0

    def failed(self, ip: str) -> None:
        """Take one token for a failed attempt from ``ip``."""
        if len(self._buckets) > 50_000:  # bound memory under address spraying
            self._buckets.clear()
        self._buckets[ip] = (max(0.0, self._tokens(ip) - 1.0), self._clock())


class AccountLockout:
    """Per-account failure counting shared by all nodes through the store."""

    def __init__(
        self, store: KVStore, policy: LockoutPolicy, clock: Callable[[], float] = time.time
    ):
        self._store = store
        self._policy = policy
        self._clock = clock

    async def status(self, account: str) -> tuple[float, bool]:
        """(seconds until ``account`` may try again, whether it has a failure counter)."""
        kv = await self._store.get(LOCKOUT_PREFIX + account)
        if kv is None:
            return 0.0, False
        return max(0.0, float(json.loads(kv.value)["locked_until"]) - self._clock()), True

    async def record_failure(self, account: str) -> None:
        """Count one failure; locks the account when the limit is reached."""
        key = LOCKOUT_PREFIX + account
        for _ in range(5):  # compare-and-swap retries: nodes may count concurrently
            kv = await self._store.get(key)
            state = json.loads(kv.value) if kv else {"failures": 0, "locks": 0, "locked_until": 0}
            state["failures"] += 1
            if state["failures"] >= self._policy.max_failures:
                duration = min(
                    self._policy.lock_seconds * 2 ** state["locks"], self._policy.max_lock_seconds
                )
                state.update(failures=0, locks=state["locks"] + 1)
                state["locked_until"] = self._clock() + duration
            if await self._store.compare_and_swap(
                key, kv.version if kv else 0, json.dumps(state).encode()
            ):
                return

    async def record_success(self, account: str) -> None:
        """A successful login clears the counter."""
        await self._store.delete(LOCKOUT_PREFIX + account)
