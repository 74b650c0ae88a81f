"""FlareDB benchmark: a 3-process cluster on loopback beside a local SQLite file.

Prints a table (never asserts): single-statement INSERT throughput and p50/p99 at 1 and
64 in flight (level strong writes go through Raft anyway), a bulk insert of 10,000 rows
in one request, and point reads at each consistency level; the same work on a local
SQLite file (WAL, synchronous=FULL: the physical limit of one fsync'd file) is the
reference, printed as ratios.

    python bench/flaredb.py [--n 2000] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address
from pathlib import Path

import aiohttp

from plasmacloud.common.config import NodeConfig, PeerConfig, ServicePorts, TLSConfig

HOSTS = ("127.0.0.31", "127.0.0.32", "127.0.0.33")
ROW = "x" * 256


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def configs(root: Path) -> list[NodeConfig]:
    peers = []
    for i, host in enumerate(HOSTS, start=1):
        p = [free_port(host) for _ in range(6)]
        peers.append(
            PeerConfig(
                node_id=f"node{i:02d}",
                hostname=f"node{i:02d}",
                ip=IPv4Address(host),
                ports=ServicePorts(
                    chainfire_client=p[0],
                    chainfire_peer=p[1],
                    chainfire_metrics=p[2],
                    flaredb_http=p[3],
                    flaredb_raft=p[4],
                    iam_http=p[5],
                ),
            )
        )
    return [
        NodeConfig(
            node_id=p.node_id,
            hostname=p.hostname,
            ip=p.ip,
            peers=peers,
            ports=p.ports,
            tls=TLSConfig(enabled=False),
            data_dir=root / p.node_id,
        )
        for p in peers
    ]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(
    n: int, inflight: int, op: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Run op(0..n-1) with `inflight` workers; (ops per second, latencies)."""
    lat: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await op(i)
            lat.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return n / (time.perf_counter() - start), lat


async def wait_leader(session: aiohttp.ClientSession, urls: list[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for u in urls:
            try:
                async with session.get(u + "/status") as r:
                    doc = await r.json()
                    if doc["store"]["raft"]["state"] == "Leader":
                        return u
            except (aiohttp.ClientError, KeyError, ValueError):
                pass
        await asyncio.sleep(0.2)
    raise SystemExit("no FlareDB leader within 30s")


async def bench_cluster(urls: list[str], n: int) -> dict[str, tuple[float, float, float]]:
    out: dict[str, tuple[float, float, float]] = {}
    conn = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=conn) as s:
        leader = await wait_leader(s, urls)

        async def post(path: str, body: object) -> dict:  # type: ignore[type-arg]
            async with s.post(
                leader + path, data=json.dumps(body), headers={"Content-Type": "application/json"}
            ) as r:
                doc = await r.json()
                if r.status != 200 or "error" in doc["results"][0]:
                    raise SystemExit(f"{path}: HTTP {r.status} {doc}")
                return dict(doc)

        await post("/db/execute", ["CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)"])
        for inflight in (1, 64):
            count = n if inflight == 1 else n * 3
            rate, lat = await timed(
                count,
                inflight,
                lambda i: post("/db/execute", [["INSERT INTO b(v) VALUES(?)", ROW]]),
            )
            out[f"insert x1, {inflight} in flight"] = (rate, pct(lat, 0.5), pct(lat, 0.99))
        rows = [["INSERT INTO b(v) VALUES(?)", ROW] for _ in range(10_000)]
        t0 = time.perf_counter()
        await post("/db/execute?transaction", rows)
        dt = time.perf_counter() - t0
        out["bulk 10,000 rows, 1 request"] = (10_000 / dt, dt, dt)
        for level in ("none", "weak", "linearizable", "strong"):
            rate, lat = await timed(
                n,
                1,
                lambda i, lv=level: post(
                    f"/db/query?level={lv}", [["SELECT v FROM b WHERE id = ?", i + 1]]
                ),
            )
            out[f"point read, level={level}"] = (rate, pct(lat, 0.5), pct(lat, 0.99))
        rate, lat = await timed(
            n * 3,
            64,
            lambda i: post(
                "/db/query?level=linearizable", [["SELECT v FROM b WHERE id = ?", i + 1]]
            ),
        )
        out["point read, linearizable, 64 in flight"] = (rate, pct(lat, 0.5), pct(lat, 0.99))
    return out


def bench_sqlite(root: Path, n: int) -> dict[str, tuple[float, float, float]]:
    """The same work on one local SQLite file: the physical limit on this disk."""
    out: dict[str, tuple[float, float, float]] = {}
    db = sqlite3.connect(root / "local.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)")
    lat = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        db.execute("INSERT INTO b(v) VALUES(?)", (ROW,))  # autocommit: one fsync each
        lat.append(time.perf_counter() - t0)
    rate = n / (time.perf_counter() - start)
    out["insert x1, 1 in flight"] = (rate, pct(lat, 0.5), pct(lat, 0.99))
    out["insert x1, 64 in flight"] = out["insert x1, 1 in flight"]  # one writer either way
    t0 = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO b(v) VALUES(?)", [(ROW,)] * 10_000)
    db.execute("COMMIT")
    dt = time.perf_counter() - t0
    out["bulk 10,000 rows, 1 request"] = (10_000 / dt, dt, dt)
    lat = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        db.execute("SELECT v FROM b WHERE id = ?", (i + 1,)).fetchone()
        lat.append(time.perf_counter() - t0)
    read = (n / (time.perf_counter() - start), pct(lat, 0.5), pct(lat, 0.99))
    for level in ("none", "weak", "linearizable", "strong"):
        out[f"point read, level={level}"] = read
    out["point read, linearizable, 64 in flight"] = read
    db.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="operations per sequential case")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="flaredb-bench-") as tmp:
        root = Path(tmp)
        cfgs = configs(root)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for cfg in cfgs:
                path = root / f"{cfg.node_id}.json"
                cfg.dump(path)
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            "from plasmacloud.cli import app; app()",
                            "flaredb",
                            "serve",
                            "--config",
                            str(path),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=open(root / f"{cfg.node_id}.log", "wb"),  # noqa: SIM115
                        start_new_session=True,
                    )
                )
            urls = [f"http://{c.ip}:{c.ports.flaredb_http}" for c in cfgs]
            flare = asyncio.run(bench_cluster(urls, args.n))
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
        local = bench_sqlite(root, args.n)
    print(f"FlareDB (3 processes, loopback, plain HTTP, {len(ROW)}-byte values) vs local SQLite")
    print(
        f"{'case':42} {'FlareDB ops/s':>14} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'SQLite ops/s':>13} {'ratio':>9}"
    )
    for case, (rate, p50, p99) in flare.items():
        lrate = local[case][0]
        print(
            f"{case:42} {rate:14,.0f} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f} "
            f"{lrate:13,.0f} {rate / lrate:8.3g}x"
        )
    print("(ratio = FlareDB / local SQLite; bulk p50/p99 columns are the request's wall time)")


if __name__ == "__main__":
    main()
