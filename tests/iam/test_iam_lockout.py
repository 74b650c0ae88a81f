"""Brute-force protection: account lockout in the store, per-IP token buckets."""

from __future__ import annotations

from plasmacloud.iam.lockout import AccountLockout, IpFailureLimiter, LockoutPolicy
from plasmacloud.iam.store import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_lockout_counts_locks_doubles_and_clears() -> None:
    clock = Clock()
    lock = AccountLockout(
        MemoryStore(), LockoutPolicy(max_failures=3, lock_seconds=60), clock=clock
    )
    assert await lock.status("users/a") == (0.0, False)
    for _ in range(2):
        await lock.record_failure("users/a")
    assert await lock.status("users/a") == (0.0, True)
    await lock.record_success("users/a")  # a success resets the count
    assert await lock.status("users/a") == (0.0, False)
    for _ in range(3):
        await lock.record_failure("users/a")
    assert (await lock.status("users/a"))[0] == 60.0
    assert await lock.status("users/b") == (0.0, False)  # others unaffected
    clock.now += 61
    assert (await lock.status("users/a"))[0] == 0.0
    for _ in range(3):
        await lock.record_failure("users/a")
    assert (await lock.status("users/a"))[0] == 120.0  # second lock: twice as long


def test_ip_failures_bucket_refills_over_time() -> None:
    clock = Clock()
    limiter = IpFailureLimiter(burst=3, per_second=0.5, clock=clock)
    assert not limiter.blocked("10.0.0.1")
    for _ in range(3):
        limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1")
    assert not limiter.blocked("10.0.0.2")  # per address
    clock.now += 2.0  # one token back
    assert not limiter.blocked("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1")
