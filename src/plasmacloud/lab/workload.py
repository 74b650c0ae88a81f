"""Bounded closed-loop load: N workers issue operations until a count or a deadline.

Used by the e2e tests (writes whose acknowledgement is recorded, so a later check can
prove none was lost) and by the benchmark (throughput and latency percentiles).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc

Op = Callable[[int], Awaitable[None]]


@dataclass
class LoadResult:
    """What a run did: completed operations, failures, elapsed time, per-op latencies."""

    ok: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    first_error: str | None = None

    @property
    def ops_per_s(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Latency percentile ``q`` (0..100) of successful operations, in milliseconds."""
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        i = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[i] * 1000


async def run_load(op: Op, concurrency: int, max_ops: int, duration_s: float) -> LoadResult:
    """Run ``op(i)`` for i = 0, 1, ... on ``concurrency`` workers; stop at ``max_ops``
    issued or after ``duration_s`` (both bounds always apply)."""
    result = LoadResult()
    next_i = 0
    deadline = time.monotonic() + duration_s

    async def worker() -> None:
        nonlocal next_i
        while next_i < max_ops and time.monotonic() < deadline:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            try:
                await op(i)
            except (grpc.aio.AioRpcError, TimeoutError, ConnectionError) as exc:
                result.errors += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                continue
            result.latencies_s.append(time.perf_counter() - t0)
            result.ok += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - start
    return result


def key_of(i: int, prefix: bytes = b"k") -> bytes:
    """The i-th key of a workload: fixed width so keys sort and size the same."""
    return prefix + i.to_bytes(8, "big").hex().encode()


async def put_acknowledged(
    channels: list[grpc.aio.Channel],
    count: int,
    prefix: bytes,
    concurrency: int = 16,
    duration_s: float = 60.0,
    timeout_s: float = 15.0,
) -> dict[bytes, bytes]:
    """Put up to ``count`` keys round-robin through ``channels``; return the ones whose
    Put returned OK (the acknowledged writes a correct cluster must never lose)."""
    stubs = [rpc_pb2_grpc.KVStub(c) for c in channels]
    acked: dict[bytes, bytes] = {}

    async def put(i: int) -> None:
        key, value = key_of(i, prefix), b"v%d" % i
        await stubs[i % len(stubs)].Put(rpc_pb2.PutRequest(key=key, value=value), timeout=timeout_s)
        acked[key] = value

    await run_load(put, concurrency, count, duration_s)
    return acked
