"""FlareDB bulk insert, repeated: 10,000 rows in one request against a 3-node lab, each
run beside the same insert on a local SQLite file, medians printed (never asserts).

bench/flaredb.py times one bulk request, which on a shared 2-core machine swings by 2x
between runs; this repeats the pair (FlareDB request, then local SQLite) ``--runs``
times so both sides see about the same load, and prints every run, the medians and the
median of the per-run ratios. It also prints each FlareDB node's CPU time per request
(from /proc, 10 ms ticks), so leader and follower work can be told apart from waiting.

    python bench/flaredb_bulk.py [--runs 7] [--rows 10000] [--plain]

The local SQLite side is what an application would do on one file: one transaction,
``executemany`` of the same INSERT, WAL with synchronous=FULL (one fsync'd commit);
no HTTP, no JSON, no replication. FlareDB's side is a ``?transaction`` request
(all-or-nothing on every replica), body already encoded, response read and checked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from plasmacloud.cluster.services import flaredb_url
from plasmacloud.common.tls import client_context
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import CHAINFIRE, FLAREDB
from plasmacloud.lab.spec import scratch_spec

ROW = "x" * 256
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def flaredb_pids(lab: Lab) -> dict[str, int]:
    """node id -> pid of its FlareDB process."""
    out = {}
    for node in lab.spec.node_ids:
        for svc in lab.backend.node_status(node).services:
            if svc.service == FLAREDB.name and svc.pid is not None:
                out[node] = svc.pid
    return out


def local_bulk(db: sqlite3.Connection, rows: int) -> float:
    t0 = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO b(v) VALUES(?)", [(ROW,)] * rows)
    db.execute("COMMIT")
    return time.perf_counter() - t0


async def leader_url(lab: Lab, session: aiohttp.ClientSession) -> tuple[str, str]:
    for _ in range(50):
        leaders = set()
        for cfg in lab.configs():
            async with session.get(flaredb_url(cfg) + "/status") as r:
                leaders.add((await r.json())["store"]["leader"]["node_id"])
        if len(leaders) == 1 and "" not in leaders:
            (leader,) = leaders
            cfg = next(c for c in lab.configs() if c.node_id == leader)
            return leader, flaredb_url(cfg)
        await asyncio.sleep(0.2)
    raise SystemExit(f"the nodes do not agree on a leader: {leaders}")


async def run(lab: Lab, local: sqlite3.Connection, runs: int, rows: int) -> list[dict[str, float]]:
    await lab.wait_ready(timeout=90)
    ssl_ctx = client_context(lab.operator_tls) if lab.spec.tls else None
    pids = flaredb_pids(lab)
    body = json.dumps([["INSERT INTO b(v) VALUES(?)", ROW]] * rows).encode()
    headers = {"Content-Type": "application/json"}
    out = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx or False)) as s:
        leader, url = await leader_url(lab, s)
        async with s.post(
            url + "/db/execute",
            data=b'["CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)"]',
            headers=headers,
        ) as r:
            r.raise_for_status()
        for i in range(runs + 1):  # the first run warms up (connections, caches)
            await asyncio.sleep(0.5)  # followers finish applying the previous run
            cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
            t0 = time.perf_counter()
            async with s.post(url + "/db/execute?transaction", data=body, headers=headers) as r:
                doc = await r.json()
            wall = time.perf_counter() - t0
            if r.status == 503:  # a leader change under load: not a timing, try again
                print(f"run {i}: HTTP 503 ({doc.get('error')}), skipped", flush=True)
                leader, url = await leader_url(lab, s)
                continue
            if r.status != 200 or len(doc["results"]) != rows or "error" in doc["results"][-1]:
                raise SystemExit(f"bulk request failed: HTTP {r.status} {str(doc)[:300]}")
            await asyncio.sleep(0.5)
            cpu = {n: cpu_seconds(p) - cpu0[n] for n, p in pids.items()}
            sqlite_s = local_bulk(local, rows)
            if i == 0:
                print(f"warm-up: FlareDB {wall * 1e3:.1f} ms, SQLite {sqlite_s * 1e3:.1f} ms")
                continue
            followers = [cpu[n] for n in sorted(cpu) if n != leader]
            out.append(
                {
                    "flaredb": wall,
                    "sqlite": sqlite_s,
                    "ratio": sqlite_s / wall,
                    "leader_cpu": cpu[leader],
                    "follower_cpu": statistics.mean(followers) if followers else 0.0,
                    "load": os.getloadavg()[0],
                }
            )
            print(
                f"run {i}: FlareDB {wall * 1e3:7.1f} ms  SQLite {sqlite_s * 1e3:6.1f} ms  "
                f"ratio {sqlite_s / wall:.3f}x  CPU leader {cpu[leader] * 1e3:4.0f} ms, "
                f"followers {' / '.join(f'{c * 1e3:.0f}' for c in followers)} ms  "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--plain", action="store_true", help="lab without TLS")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="flaredb-bulk-") as tmp:
        root = Path(tmp)
        local = sqlite3.connect(root / "local.db", isolation_level=None)
        local.execute("PRAGMA journal_mode=WAL")
        local.execute("PRAGMA synchronous=FULL")
        local.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)")
        lab = Lab.open(
            root / "lab", scratch_spec(tls=not args.plain), services=(CHAINFIRE, FLAREDB)
        )
        try:
            lab.up()
            results = asyncio.run(run(lab, local, args.runs, args.rows))
        finally:
            lab.down()
            local.close()
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    transport = "plain TCP" if args.plain else "mTLS"
    print(
        f"{args.rows:,} rows in 1 request, 3-node lab ({transport}), median of {args.runs}: "
        f"FlareDB {med['flaredb'] * 1e3:.1f} ms, local SQLite {med['sqlite'] * 1e3:.1f} ms, "
        f"FlareDB vs SQLite {med['ratio']:.3f}x (median of per-run ratios); "
        f"CPU per request: leader {med['leader_cpu'] * 1e3:.0f} ms, "
        f"follower {med['follower_cpu'] * 1e3:.0f} ms; load {med['load']:.1f}"
    )


if __name__ == "__main__":
    main()
