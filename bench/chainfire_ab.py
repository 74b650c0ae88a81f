#!/usr/bin/env python3
"""A/B: several Chainfire builds (and optionally etcd 3.4) side by side, put load, in rounds.

Each variant is a ``plasma`` executable (e.g. a script that puts an older checkout's
``src`` first on ``sys.path``), optionally followed by flags for ``chainfire serve``
(``fe2="$PREFIX/bin/plasma --frontends 2"``: the script itself, not a pyenv shim, whose
argv the lab would not recognise); every one runs as a 3-node mTLS cluster on its
own scratch loopback range, all up at once. Each round drives every cluster in turn (order reversed
on odd rounds) with the same puts as bench/chainfire_vs_etcd.py and records ops/s,
p50/p99, the CPU time per put of the leader and of the followers (from /proc; a member with
frontend workers counts them, and its own process alone is printed as "core") and the puts
per leader log fdatasync (from its /metrics). Prints every round and the medians; never
asserts. Bounded by rounds x seconds.

    python bench/chainfire_ab.py --concurrency 64 --rounds 4 \\
        before=/path/to/old/plasma after=$(python -c 'import sys; print(sys.prefix)')/bin/plasma \\
        --etcd
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import shutil
import statistics
import tempfile
from pathlib import Path

from chainfire_vs_etcd import WARMUP_OPS, cpu_seconds, leader_kv, put_op, scrape

from plasmacloud.chainfire.proto.rpc_pb2_grpc import KVStub
from plasmacloud.lab.control import Lab
from plasmacloud.lab.pids import children
from plasmacloud.lab.reference import ETCD
from plasmacloud.lab.services import CHAINFIRE, ServiceSpec
from plasmacloud.lab.spec import scratch_spec
from plasmacloud.lab.workload import run_load

MAX_OPS = 200_000


@dataclasses.dataclass
class Round:
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    leader_cpu_us: float  # per put, the leader's processes
    leader_core_us: float  # per put, the leader's member process alone (without workers)
    follower_cpu_us: float  # per put, mean of the followers
    per_fsync: float  # puts per leader log fdatasync (the batch size)


def chainfire_from(command: str) -> ServiceSpec:
    """Chainfire's service spec, started through another ``plasma`` executable (the first
    word of ``command``) with the flags that follow it."""
    executable, *flags = command.split()
    return dataclasses.replace(
        CHAINFIRE,
        argv=lambda path, cfg, _plasma: [*CHAINFIRE.argv(path, cfg, executable), *flags],
    )


def pids_by_node(lab: Lab) -> dict[str, int]:
    out = {}
    for node in lab.spec.node_ids:
        for proc in lab.backend.node_status(node).services:
            if proc.pid is not None:
                out[node] = proc.pid
    return out


def leader_fsyncs(lab: Lab, leader: str | None) -> float:
    """The leader's Raft log fdatasyncs so far, from its /metrics (0 if unknown: etcd names
    its metrics otherwise)."""
    if leader is None:
        return 0.0
    return scrape(lab, leader).get("raft_fsync_duration_seconds_count", 0.0)


async def one_round(lab: Lab, kv: KVStub, concurrency: int, seconds: float) -> Round:
    leader = (await lab.probe()).leader_node
    pids = pids_by_node(lab)
    op = put_op(kv)
    await run_load(op, concurrency, WARMUP_OPS, seconds / 2)
    fsyncs = leader_fsyncs(lab, leader)  # scraped outside the measured interval
    workers = {n: children(p) for n, p in pids.items()}
    before = {n: cpu_seconds([p, *workers[n]]) for n, p in pids.items()}
    core_before = cpu_seconds([pids[leader]]) if leader in pids else 0.0
    r = await run_load(op, concurrency, MAX_OPS, seconds)
    used = {n: cpu_seconds([p, *workers[n]]) - before[n] for n, p in pids.items()}
    core = cpu_seconds([pids[leader]]) - core_before if leader in pids else 0.0
    fsyncs = leader_fsyncs(lab, leader) - fsyncs
    ok = max(r.ok, 1)
    followers = [used[n] for n in used if n != leader]
    return Round(
        r.ops_per_s,
        r.percentile_ms(50),
        r.percentile_ms(99),
        used.get(leader or "", 0.0) / ok * 1e6,
        core / ok * 1e6,
        statistics.mean(followers) / ok * 1e6 if followers else 0.0,
        ok / fsyncs if fsyncs else 0.0,
    )


async def measure(labs: dict[str, Lab], args: argparse.Namespace) -> dict[str, list[Round]]:
    results: dict[str, list[Round]] = {name: [] for name in labs}
    async with contextlib.AsyncExitStack() as stack:
        kvs = {name: await leader_kv(lab, stack) for name, lab in labs.items()}
        for i in range(args.rounds):
            order = list(labs) if i % 2 == 0 else list(reversed(labs))
            for name in order:
                r = await one_round(labs[name], kvs[name], args.concurrency, args.seconds)
                results[name].append(r)
                print(f"round {i} {name:10} {_fmt(r)}", flush=True)
    return results


def _fmt(r: Round) -> str:
    return (
        f"{r.ops_per_s:7,.0f}/s p50 {r.p50_ms:6.2f} p99 {r.p99_ms:7.2f} ms; CPU per put: "
        f"leader {r.leader_cpu_us:5,.0f} us (core {r.leader_core_us:5,.0f}), "
        f"follower {r.follower_cpu_us:5,.0f} us; "
        f"{r.per_fsync:4.1f} per fsync"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "variants", nargs="+", help="NAME=PATH_TO_PLASMA_EXECUTABLE [CHAINFIRE SERVE FLAGS]"
    )
    parser.add_argument("--etcd", action="store_true", help="also run etcd 3.4")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--model-cores", type=int, default=8, help="cores of the machine the model is for"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="plasma-ab-"))
    labs: dict[str, Lab] = {}
    for variant in args.variants:
        name, _, exe = variant.partition("=")
        labs[name] = Lab.open(root / name, scratch_spec(), services=(chainfire_from(exe),))
    if args.etcd:
        labs["etcd"] = Lab.open(root / "etcd", scratch_spec(), services=(ETCD,))
    try:
        for lab in labs.values():
            lab.up()
        results = asyncio.run(measure(labs, args))
    finally:
        for lab in labs.values():
            lab.down()
        shutil.rmtree(root, ignore_errors=True)
    print("medians:")
    medians = {}
    for name, rounds in results.items():
        columns = zip(*map(dataclasses.astuple, rounds), strict=True)
        medians[name] = med = Round(*(statistics.median(col) for col in columns))
        print(f"  {name:10} {_fmt(med)}")
    print(f"model, a leader with {args.model_cores} cores (puts/s its CPU per put allows):")
    for name, med in medians.items():
        print(f"  {name:10} {_model(name, med, args.model_cores)}")


def _model(name: str, med: Round, cores: int) -> str:
    """Puts/s a leader's measured CPU per put allows on ``cores`` cores: a Chainfire
    member's own process is one thread (its workers share the other cores); etcd is
    taken as spreading all its work over every core, an upper bound that flatters it."""
    if not med.leader_cpu_us or not med.leader_core_us:
        return "no figures"
    if name == "etcd":
        return f"at most {cores * 1e6 / med.leader_cpu_us:,.0f}/s (all cores)"
    serial = 1e6 / med.leader_core_us
    workers_us = med.leader_cpu_us - med.leader_core_us
    if workers_us < 0.05 * med.leader_cpu_us:
        return f"{serial:,.0f}/s (one thread does everything)"
    parallel = (cores - 1) * 1e6 / workers_us
    return (
        f"{min(serial, parallel):,.0f}/s (member process {serial:,.0f}/s; "
        f"workers' {workers_us:,.0f} us on {cores - 1} cores {parallel:,.0f}/s)"
    )


if __name__ == "__main__":
    main()
