"""Measure the engine alone: 3 real RaftNodes on loopback in one process, durable (fdatasync)
log in a temp dir, 256-byte proposals from 1 and 64 concurrent proposers.

    python -m plasmacloud.raft.bench [--count 20000] [--via-follower] [--tls]

Prints proposals/s, latency percentiles and fsyncs per proposal (group commit at work). It
never asserts anything: the numbers go into docs/adr/001-raft-engine.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from plasmacloud.raft.memory import MemoryStateMachine
from plasmacloud.raft.node import RaftConfig, RaftNode


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _fsyncs(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("raft_fsync_duration_seconds_count") or 0.0


async def _run(count: int, concurrency: int, via_follower: bool, root: Path) -> str:
    net = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
    members = {f"n{i}": f"{net}.{i}:{_free_port(f'{net}.{i}')}" for i in (1, 2, 3)}
    nodes: list[RaftNode] = []
    registries: list[CollectorRegistry] = []
    for node_id, address in members.items():
        host, port = address.rsplit(":", 1)
        registries.append(CollectorRegistry())
        cfg = RaftConfig(node_id, root / node_id, host, int(port), members, registry=registries[-1])
        nodes.append(RaftNode(cfg, MemoryStateMachine()))
    try:
        for n in nodes:
            await n.start()
        leader_id = await nodes[0].wait_for_leader()
        leader = next(n for n in nodes if n.id == leader_id)
        target = next(n for n in nodes if n.id != leader_id) if via_follower else leader
        value = b"v" * 256
        for _ in range(200):  # warm up connections and caches
            await target.propose(value)
        fsyncs_before = sum(_fsyncs(r) for r in registries)
        latencies: list[float] = []

        async def proposer(n: int) -> None:
            for _ in range(n):
                t0 = time.perf_counter()
                await target.propose(value)
                latencies.append(time.perf_counter() - t0)

        per = count // concurrency
        t0 = time.perf_counter()
        await asyncio.gather(*(proposer(per) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        fsyncs = sum(_fsyncs(r) for r in registries) - fsyncs_before
        done = per * concurrency
        latencies.sort()
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
        where = "follower" if via_follower else "leader"
        return (
            f"{concurrency:>3} in flight on the {where}: {done / elapsed:>8,.0f} proposals/s  "
            f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  fsyncs/proposal (3 nodes) {fsyncs / done:.3f}"
        )
    finally:
        for n in nodes:
            await n.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=20_000, help="proposals at 64 in flight")
    p.add_argument("--via-follower", action="store_true", help="propose on a follower")
    args = p.parse_args(argv)
    for concurrency, count in ((1, max(args.count // 20, 100)), (64, args.count)):
        with tempfile.TemporaryDirectory(prefix="raft-bench-") as d:
            print(asyncio.run(_run(count, concurrency, args.via_follower, Path(d))), flush=True)


if __name__ == "__main__":
    main()
