#!/usr/bin/env python3
"""Chainfire vs etcd 3.4: same machine, same mTLS PKI, same Python gRPC client, same workload.

Each system runs as a 3-node cluster on its own scratch 127.x.y.11-13 range through the
lab's process backend; both are up at once and every case runs on one then the other,
back to back, so background load on a shared machine hits both alike. The
client (grpc.aio, one channel to the leader) drives 8-byte keys / 256-byte values:
puts at 1 and 64 in flight, linearizable and serializable gets at 1 and 64 in flight.
Every case is bounded by time and by count. Prints ops/s, p50, p99 and the
Chainfire/etcd ratios, and the CPU time the three server processes spent per operation
(less sensitive than ops/s to whatever else loads the machine); never asserts.

    python bench/chainfire_vs_etcd.py [--seconds 5] [--json results.json] [--cases put ...]

``--soak 60`` adds a run of puts at 64 in flight for that long on each system, both
started with a snapshot every ``--snapshot-every`` entries (Chainfire's
``--snapshot-threshold``, etcd's ``--snapshot-count``) so the run crosses snapshot points;
it prints the snapshots taken, leader changes, failed or timed-out puts (5 s deadline) and
the slowest put, from each member's /metrics and the client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.lab.control import Lab
from plasmacloud.lab.pids import children
from plasmacloud.lab.reference import ETCD
from plasmacloud.lab.services import CHAINFIRE
from plasmacloud.lab.spec import scratch_spec
from plasmacloud.lab.workload import LoadResult, run_load

VALUE = os.urandom(256)
PRELOAD_KEYS = 1000
MAX_OPS_PER_CASE = 200_000
SOAK_TIMEOUT_S = 5.0  # a put slower than this counts as a client timeout, as in issue 17
# (Chainfire's name, etcd's name) of the series the soak compares
SOAK_SERIES = {
    "snapshots": ("raft_snapshots_total", "etcd_debugging_snap_save_total_duration_seconds_count"),
    "leader changes": ("raft_leader_changes_total", "etcd_server_leader_changes_seen_total"),
}
WARMUP_OPS = 200
console = Console(width=max(130, shutil.get_terminal_size().columns))


@dataclass
class Measured:
    """One case on one system: the client's view and the servers' CPU time per op."""

    load: LoadResult
    server_cpu_us: float  # user+system CPU of all three server processes per completed op


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by these processes (from /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def server_pids(lab: Lab) -> list[int]:
    """The pids of every service process of the lab, with their workers."""
    return [
        pid
        for n in lab.spec.node_ids
        for p in lab.backend.node_status(n).services
        if p.pid is not None
        for pid in (p.pid, *children(p.pid))
    ]


@dataclass(frozen=True)
class Case:
    """One measured workload."""

    name: str
    concurrency: int
    make_op: Callable[[rpc_pb2_grpc.KVStub], Callable[[int], Awaitable[None]]]


def key(i: int) -> bytes:
    return b"%08d" % (i % 100_000_000)  # 8-byte keys


def put_op(kv: rpc_pb2_grpc.KVStub, timeout: float = 10) -> Callable[[int], Awaitable[None]]:
    async def op(i: int) -> None:
        await kv.Put(rpc_pb2.PutRequest(key=key(i), value=VALUE), timeout=timeout)

    return op


def scrape(lab: Lab, node: str) -> dict[str, float]:
    """One member's unlabelled /metrics series as {name: value} (empty if it does not
    answer)."""
    cfg = next(c for c in lab.configs() if c.node_id == node)
    url = lab.services[0].metrics_url
    if url is None:
        return {}
    try:
        with urllib.request.urlopen(url(cfg), timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def soak(name: str, lab: Lab, kv: rpc_pb2_grpc.KVStub, seconds: float) -> None:
    """Puts at 64 in flight for ``seconds`` (bounded by count too); prints what crossing
    the snapshot points cost: snapshots and leader changes per member, failed puts, and
    the slowest put."""
    series = {k: v[0] if name == "chainfire" else v[1] for k, v in SOAK_SERIES.items()}
    nodes = lab.spec.node_ids
    before = {n: scrape(lab, n) for n in nodes}
    result = await run_load(put_op(kv, SOAK_TIMEOUT_S), 64, 10_000_000, seconds)
    after = {n: scrape(lab, n) for n in nodes}
    deltas = {
        label: [after[n].get(metric, 0) - before[n].get(metric, 0) for n in nodes]
        for label, metric in series.items()
    }
    console.print(
        f"  {name:9} soak {seconds:.0f} s: {result.ok:,} puts ({result.ops_per_s:,.0f}/s), "
        f"{result.errors} failed or over {SOAK_TIMEOUT_S:.0f} s, slowest "
        f"{result.percentile_ms(100):,.0f} ms, p99 {result.percentile_ms(99):,.1f} ms; "
        + "; ".join(f"{label} per member {[int(d) for d in v]}" for label, v in deltas.items())
    )
    if result.first_error:
        console.print(f"  {name:9} first error: {result.first_error}")


def get_op(serializable: bool) -> Callable[[rpc_pb2_grpc.KVStub], Callable[[int], Awaitable[None]]]:
    def make(kv: rpc_pb2_grpc.KVStub) -> Callable[[int], Awaitable[None]]:
        async def op(i: int) -> None:
            req = rpc_pb2.RangeRequest(key=key(i % PRELOAD_KEYS), serializable=serializable)
            await kv.Range(req, timeout=10)

        return op

    return make


CASES = [
    Case("put, 1 in flight", 1, put_op),
    Case("put, 64 in flight", 64, put_op),
    Case("get linearizable, 1", 1, get_op(False)),
    Case("get linearizable, 64", 64, get_op(False)),
    Case("get serializable, 1", 1, get_op(True)),
    Case("get serializable, 64", 64, get_op(True)),
]


async def leader_kv(lab: Lab, stack: contextlib.AsyncExitStack) -> rpc_pb2_grpc.KVStub:
    """A KV stub on one channel to the lab's leader, with the keys the gets read loaded."""
    view = await lab.wait_ready(timeout=60)
    leader = next(c for c in lab.configs() if c.node_id == view.leader_node)
    channel = await stack.enter_async_context(dial(client_target(leader), lab.operator_tls))
    await channel.channel_ready()
    kv = rpc_pb2_grpc.KVStub(channel)
    await run_load(put_op(kv), 32, PRELOAD_KEYS, 60)
    return kv


async def measure(
    labs: dict[str, Lab], cases: list[Case], seconds: float, soak_s: float = 0
) -> dict[str, dict[str, Measured]]:
    """Run every case on each system back to back (interleaved, so load from anything
    else on the machine hits both alike)."""
    results: dict[str, dict[str, Measured]] = {name: {} for name in labs}
    async with contextlib.AsyncExitStack() as stack:
        stubs = {name: await leader_kv(lab, stack) for name, lab in labs.items()}
        pids = {name: server_pids(lab) for name, lab in labs.items()}
        for case in cases:
            for name, kv in stubs.items():
                op = case.make_op(kv)
                await run_load(op, case.concurrency, WARMUP_OPS, seconds)
                cpu0 = cpu_seconds(pids[name])
                result = await run_load(op, case.concurrency, MAX_OPS_PER_CASE, seconds)
                cpu_us = (cpu_seconds(pids[name]) - cpu0) / max(result.ok, 1) * 1e6
                results[name][case.name] = Measured(result, cpu_us)
                console.print(
                    f"  {name:9} {case.name:22} {result.ops_per_s:8,.0f} ops/s"
                    f" {cpu_us:6,.0f} us server CPU/op"
                )
        if soak_s:
            for name, kv in stubs.items():
                await soak(name, labs[name], kv, soak_s)
    return results


def run_both(
    root: Path,
    cases: list[Case],
    seconds: float,
    frontends: int = 0,
    soak_s: float = 0,
    snapshot_every: int | None = None,
) -> dict[str, dict[str, Measured]]:
    """Bring both 3-node clusters up (Chainfire's members with ``frontends`` workers, both
    snapshotting every ``snapshot_every`` entries if given), measure, and always tear both
    down."""
    flags = ["--frontends", str(frontends)]
    etcd_flags = []
    if snapshot_every:
        flags += ["--snapshot-threshold", str(snapshot_every)]
        etcd_flags = [f"--snapshot-count={snapshot_every}"]
    chainfire = replace(CHAINFIRE, argv=lambda p, c, exe: [*CHAINFIRE.argv(p, c, exe), *flags])
    etcd = replace(ETCD, argv=lambda p, c, exe: [*ETCD.argv(p, c, exe), *etcd_flags])
    labs = {
        "chainfire": Lab.open(root / "chainfire", scratch_spec(), services=(chainfire,)),
        "etcd": Lab.open(root / "etcd", scratch_spec(), services=(etcd,)),
    }
    try:
        for name, lab in labs.items():
            console.print(f"[bold]{name}[/bold]: 3 nodes on {lab.spec.first_ip}..13, mTLS")
            lab.up()
        return asyncio.run(measure(labs, cases, seconds, soak_s))
    finally:
        for lab in labs.values():
            lab.down()


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report(cf: dict[str, Measured], etcd: dict[str, Measured]) -> Table:
    table = Table(title="Chainfire vs etcd 3.4 (3 nodes, mTLS, 8 B keys / 256 B values)")
    for col in (
        "case",
        "Chainfire ops/s",
        "p50 ms",
        "p99 ms",
        "etcd ops/s",
        "p50 ms",
        "p99 ms",
        "ops/s ratio",
        "p50 ratio",
        "CPU/op ratio",
    ):
        table.add_column(col, justify="right" if col != "case" else "left")
    for name in cf:
        a, b = cf[name].load, etcd[name].load
        errs = f" ({a.errors}/{b.errors} errors)" if a.errors or b.errors else ""
        table.add_row(
            name + errs,
            f"{a.ops_per_s:,.0f}",
            f"{a.percentile_ms(50):.2f}",
            f"{a.percentile_ms(99):.2f}",
            f"{b.ops_per_s:,.0f}",
            f"{b.percentile_ms(50):.2f}",
            f"{b.percentile_ms(99):.2f}",
            ratio(a.ops_per_s, b.ops_per_s),
            ratio(a.percentile_ms(50), b.percentile_ms(50)),
            ratio(cf[name].server_cpu_us, etcd[name].server_cpu_us),
        )
    table.caption = (
        "ratio = Chainfire / etcd (ops/s: higher is better; p50 and CPU/op: lower is better);"
        " CPU/op = CPU time of the three server processes per completed operation"
    )
    return table


def case_json(m: Measured) -> dict[str, object]:
    r = m.load
    return {
        "ops_per_s": r.ops_per_s,
        "p50_ms": r.percentile_ms(50),
        "p99_ms": r.percentile_ms(99),
        "server_cpu_us_per_op": m.server_cpu_us,
        "ok": r.ok,
        "errors": r.errors,
        "first_error": r.first_error,
    }


def as_json(results: dict[str, dict[str, Measured]]) -> dict[str, object]:
    return {
        system: {name: case_json(m) for name, m in cases.items()}
        for system, cases in results.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each case")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--cases", nargs="*", default=[], help="only cases whose name contains one of these"
    )
    parser.add_argument(
        "--frontends",
        type=int,
        default=0,
        help="Chainfire's client port served by this many worker processes per member "
        "(their CPU is counted with the member's)",
    )
    parser.add_argument(
        "--soak",
        type=float,
        default=0,
        metavar="SECONDS",
        help="also run puts at 64 in flight this long on each system, across snapshot points",
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=20_000,
        help="with --soak: both systems snapshot every this many entries (default 20000)",
    )
    args = parser.parse_args()
    cases = [c for c in CASES if not args.cases or any(w in c.name for w in args.cases)]
    if not cases:
        console.print(f"[red]no case matches {args.cases}[/red]: {[c.name for c in CASES]}")
        return 2
    if shutil.which("etcd") is None:
        console.print("[red]etcd is not installed[/red] (apt-get install etcd-server)")
        return 2
    root = Path(tempfile.mkdtemp(prefix="plasma-bench-"))
    try:
        results = run_both(
            root,
            cases,
            args.seconds,
            args.frontends,
            args.soak,
            args.snapshot_every if args.soak else None,
        )
    except grpc.RpcError as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}; logs kept in {root}")
        return 1
    console.print(report(results["chainfire"], results["etcd"]))
    for system, measured in results.items():
        for name, m in measured.items():
            if m.load.first_error:
                console.print(
                    f"[yellow]{system} / {name}: first error {m.load.first_error}[/yellow]"
                )
    if args.json:
        args.json.write_text(json.dumps(as_json(results), indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
