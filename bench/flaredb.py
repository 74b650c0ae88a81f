"""FlareDB benchmark: a 3-node lab (Chainfire + FlareDB processes on loopback, mTLS by
default) beside a local SQLite file and Chainfire puts on the same lab.

Prints a table (never asserts): single-statement INSERT throughput and p50/p99 at 1 and
64 in flight (every write goes through Raft), a bulk insert of 10,000 rows in one
request, and point reads at each consistency level. The same work on a local SQLite
file (WAL, synchronous=FULL: one fsync'd file, the physical limit) and as Chainfire
(etcd v3) puts/gets is printed beside it, with ratios.

    python bench/flaredb.py [--n 1000] [--plain]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from plasmacloud.chainfire.client import ChainfireClient
from plasmacloud.cluster.services import flaredb_url
from plasmacloud.common.tls import client_context
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import CHAINFIRE, FLAREDB
from plasmacloud.lab.spec import scratch_spec

ROW = "x" * 256
BULK = 10_000
RETRIES = 20
Stats = tuple[float, float, float]  # ops/s, p50 s, p99 s


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(n: int, inflight: int, op: Callable[[int], Awaitable[Any]]) -> Stats:
    """Run op(0..n-1) with ``inflight`` concurrent workers."""
    lat: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await op(i)
            lat.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return n / (time.perf_counter() - start), pct(lat, 0.5), pct(lat, 0.99)


async def bench_flaredb(lab: Lab, leader: str, n: int, retried: list[int]) -> dict[str, Stats]:
    out: dict[str, Stats] = {}
    url = flaredb_url(next(c for c in lab.configs() if c.node_id == leader))
    ssl_ctx = client_context(lab.operator_tls) if lab.spec.tls else None
    conn = aiohttp.TCPConnector(limit=128, ssl=ssl_ctx or False)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def post(path: str, body: object) -> None:
            # A leader change answers 503 (outcome unknown); a benchmark retries and counts
            # it rather than dying. The old leader forwards to the new one.
            data = body if isinstance(body, bytes) else json.dumps(body)
            for _ in range(RETRIES):
                async with s.post(
                    url + path, data=data, headers={"Content-Type": "application/json"}
                ) as r:
                    doc = await r.json()
                if r.status == 503:
                    retried[0] += 1
                    await asyncio.sleep(0.2)
                    continue
                if r.status != 200 or "error" in doc["results"][0]:
                    raise SystemExit(f"{path}: HTTP {r.status} {str(doc)[:300]}")
                return
            raise SystemExit(f"{path}: still 503 after {RETRIES} tries: {doc}")

        await post("/db/execute", ["CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)"])
        insert = [["INSERT INTO b(v) VALUES(?)", ROW]]
        out["insert, 1 in flight"] = await timed(n, 1, lambda i: post("/db/execute", insert))
        out["insert, 64 in flight"] = await timed(n * 3, 64, lambda i: post("/db/execute", insert))
        # Encoded before the clock starts, as the SQLite side's rows are built before its
        # clock (encoding 2.9 MB of JSON costs the client 25-55 ms on this machine).
        bulk = json.dumps(insert * BULK).encode()
        t0 = time.perf_counter()
        await post("/db/execute?transaction", bulk)
        dt = time.perf_counter() - t0
        out[f"bulk {BULK:,} rows, 1 request"] = (BULK / dt, dt, dt)
        for level in ("none", "weak", "linearizable", "strong"):
            out[f"point read, {level}"] = await timed(
                n,
                1,
                lambda i, lv=level: post(
                    f"/db/query?level={lv}", [["SELECT v FROM b WHERE id = ?", i + 1]]
                ),
            )
        out["point read, linearizable, 64 in flight"] = await timed(
            n * 3,
            64,
            lambda i: post(
                "/db/query?level=linearizable", [["SELECT v FROM b WHERE id = ?", i + 1]]
            ),
        )
    return out


async def bench_chainfire(lab: Lab, leader: str, n: int) -> dict[str, Stats]:
    cfg = next(c for c in lab.configs() if c.node_id == leader)
    out: dict[str, Stats] = {}
    async with ChainfireClient([f"{cfg.ip}:{cfg.ports.chainfire_client}"], lab.operator_tls) as c:
        out["insert, 1 in flight"] = await timed(n, 1, lambda i: c.put(f"b/{i}", ROW))
        out["insert, 64 in flight"] = await timed(n * 3, 64, lambda i: c.put(f"b/{i}", ROW))
        reads = {"none": True, "weak": True, "linearizable": False, "strong": False}
        for level, serializable in reads.items():
            out[f"point read, {level}"] = await timed(
                n, 1, lambda i, s=serializable: c.get(f"b/{i}", serializable=s)
            )
        out["point read, linearizable, 64 in flight"] = await timed(
            n * 3, 64, lambda i: c.get(f"b/{i}")
        )
    return out


def bench_sqlite(root: Path, n: int) -> dict[str, Stats]:
    """The same work on one local SQLite file: the physical limit on this disk."""
    out: dict[str, Stats] = {}
    db = sqlite3.connect(root / "local.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)")

    def run(count: int, op: Callable[[int], object]) -> Stats:
        lat = []
        start = time.perf_counter()
        for i in range(count):
            t0 = time.perf_counter()
            op(i)
            lat.append(time.perf_counter() - t0)
        return count / (time.perf_counter() - start), pct(lat, 0.5), pct(lat, 0.99)

    # Autocommit: one transaction and one fsync per insert; one writer whatever the clients.
    out["insert, 1 in flight"] = run(n, lambda i: db.execute("INSERT INTO b(v) VALUES(?)", (ROW,)))
    out["insert, 64 in flight"] = out["insert, 1 in flight"]
    t0 = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO b(v) VALUES(?)", [(ROW,)] * BULK)
    db.execute("COMMIT")
    dt = time.perf_counter() - t0
    out[f"bulk {BULK:,} rows, 1 request"] = (BULK / dt, dt, dt)
    read = run(n, lambda i: db.execute("SELECT v FROM b WHERE id = ?", (i + 1,)).fetchone())
    for level in ("none", "weak", "linearizable", "strong"):
        out[f"point read, {level}"] = read
    out["point read, linearizable, 64 in flight"] = read
    db.close()
    return out


async def bench_lab(
    lab: Lab, n: int, retried: list[int]
) -> tuple[dict[str, Stats], dict[str, Stats]]:
    await lab.wait_ready(timeout=90)
    leaders = set()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            ssl=client_context(lab.operator_tls) if lab.spec.tls else False
        )
    ) as s:
        for cfg in lab.configs():
            async with s.get(flaredb_url(cfg) + "/status") as r:
                leaders.add((await r.json())["store"]["leader"]["node_id"])
    (flare_leader,) = leaders
    view = await lab.probe()
    chain_leader = view.leader_node or flare_leader
    flare = await bench_flaredb(lab, flare_leader, n, retried)
    chain = await bench_chainfire(lab, chain_leader, n)
    return flare, chain


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3g}x" if a and b else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="operations per 1-in-flight case")
    ap.add_argument("--plain", action="store_true", help="lab without TLS")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="flaredb-bench-") as tmp:
        root = Path(tmp)
        # Chainfire and FlareDB only (no IAM, so no auth): the cost of SQL over Raft.
        lab = Lab.open(
            root / "lab", scratch_spec(tls=not args.plain), services=(CHAINFIRE, FLAREDB)
        )
        retried = [0]
        try:
            lab.up()
            flare, chain = asyncio.run(bench_lab(lab, args.n, retried))
        finally:
            lab.down()
        local = bench_sqlite(root, args.n)
    transport = "plain TCP" if args.plain else "mTLS"
    print(f"FlareDB: 3-node lab on loopback ({transport}), {len(ROW)}-byte values, n={args.n}")
    head = (
        f"{'case':40} {'FlareDB/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'SQLite/s':>10} "
        f"{'Chainfire/s':>11} {'vs SQLite':>9} {'vs Chainf.':>10}"
    )
    print(head)
    print("-" * len(head))
    for case, (rate, p50, p99) in flare.items():
        lrate = local[case][0]
        crate = chain.get(case, (None, 0.0, 0.0))[0]
        cshow = f"{crate:11,.0f}" if crate else f"{'n/a':>11}"
        print(
            f"{case:40} {rate:10,.0f} {p50 * 1e3:7.2f} {p99 * 1e3:7.2f} {lrate:10,.0f} "
            f"{cshow} {ratio(rate, lrate):>9} {ratio(rate, crate):>10}"
        )
    if retried[0]:
        print(
            f"({retried[0]} FlareDB requests answered 503 during a leader change and were retried)"
        )
    print(
        "bulk: rows/s, p50/p99 = the request's wall time (body encoded beforehand, response "
        "read and parsed). SQLite = same work on a local file "
        "(one writer); Chainfire = etcd v3 Put/Range (serializable for none/weak)."
    )


if __name__ == "__main__":
    main()
