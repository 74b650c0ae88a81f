"""Measure the engine alone: 3 real RaftNodes on loopback (in one process, or with
``--processes`` the two followers in their own processes), durable (fdatasync) logs in a temp
dir, 256-byte proposals from 1 and 64 concurrent proposers.

    python -m plasmacloud.raft.bench [--count 20000] [--via-follower | --processes]

Prints proposals/s, latency percentiles and fsyncs per proposal (group commit at work). It
never asserts anything: the numbers go into docs/adr/001-raft-engine.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
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


def _members() -> dict[str, str]:
    net = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
    return {f"n{i}": f"{net}.{i}:{_free_port(f'{net}.{i}')}" for i in (1, 2, 3)}


def _config(node_id: str, members: dict[str, str], root: Path, **kw: object) -> RaftConfig:
    host, port = members[node_id].rsplit(":", 1)
    return RaftConfig(node_id, root / node_id, host, int(port), members, **kw)  # type: ignore[arg-type]


async def _serve(node_id: str, members: dict[str, str], root: Path) -> None:
    """A follower in its own process (slow election timeout: the parent's node leads)."""
    node = RaftNode(_config(node_id, members, root, election_timeout=(5.0, 10.0)),
                    MemoryStateMachine())  # fmt: skip
    await node.start()
    await asyncio.Event().wait()  # until the parent terminates us


async def _run(count: int, concurrency: int, via_follower: bool, processes: bool) -> str:
    members = _members()
    nodes: list[RaftNode] = []
    registries: list[CollectorRegistry] = []
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="raft-bench-") as d:
        root = Path(d)
        local = ["n1"] if processes else list(members)
        for node_id in members:
            if node_id in local:
                registries.append(CollectorRegistry())
                cfg = _config(node_id, members, root, registry=registries[-1],
                              election_timeout=(0.1, 0.2) if processes else (0.3, 0.6))  # fmt: skip
                nodes.append(RaftNode(cfg, MemoryStateMachine()))
            else:
                cmd = [sys.executable, "-m", "plasmacloud.raft.bench", "--serve", node_id,
                       "--members", json.dumps(members), "--dir", d]  # fmt: skip
                children.append(subprocess.Popen(cmd))
        try:
            for n in nodes:
                await n.start()
            return await _measure(nodes, registries, count, concurrency, via_follower and
                                  not processes)  # fmt: skip
        finally:
            for n in nodes:
                await n.stop()
            for child in children:
                child.terminate()
                child.wait(10)


async def _measure(
    nodes: list[RaftNode],
    registries: list[CollectorRegistry],
    count: int,
    concurrency: int,
    via_follower: bool,
) -> str:
    leader_id = await nodes[0].wait_for_leader()
    async with asyncio.timeout(30):
        while not any(n.is_leader for n in nodes):
            await asyncio.sleep(0.05)
    leader = next(n for n in nodes if n.is_leader)
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
        f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
        f"fsyncs/proposal ({len(registries)} node(s) in this process) {fsyncs / done:.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=20_000, help="proposals at 64 in flight")
    p.add_argument("--via-follower", action="store_true", help="propose on a follower")
    p.add_argument("--processes", action="store_true", help="followers in their own processes")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--members", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, json.loads(args.members), Path(args.dir)))
        return
    for concurrency, count in ((1, max(args.count // 20, 100)), (64, args.count)):
        line = asyncio.run(_run(count, concurrency, args.via_follower, args.processes))
        print(line, flush=True)


if __name__ == "__main__":
    main()
