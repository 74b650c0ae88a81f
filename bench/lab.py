#!/usr/bin/env python3
"""Lab cold start and failover, beside etcd 3.4 measured the same way in the same run.

* cold start: ``Lab.up`` on an empty directory until the cluster is ready (healthy, one
  agreed leader), then until every validation check is green -- for the process backend
  (Chainfire + FlareDB), the netns backend (same services, own namespaces; skipped
  where namespaces cannot be made) and a 3-node etcd 3.4 through the process backend;
* failover: kill -9 the node holding a service's leader, then write through the
  surviving nodes (round robin, one short-timeout attempt each, no waiting on probes)
  until one write is acknowledged: the time from the kill to that acknowledgement.
  For Chainfire, FlareDB and etcd; ``--rounds`` times each, restarting the node and
  waiting for a healthy cluster between rounds;
* with ``--qemu``: the QEMU lab's cold start (image cached after the first run) until
  every check is green, per phase (bench/lab_qemu.py; target <= 3 min).

Everything runs on scratch loopback ranges (or a scratch private /24 for netns) with
free ports; every loop is bounded. Prints medians and ratios to etcd; never asserts.

    python bench/lab.py [--rounds 3] [--skip-netns] [--qemu] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import aiohttp
import grpc
import lab_qemu  # bench/lab_qemu.py (this script's directory is on sys.path)
from rich.console import Console
from rich.table import Table

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.chaos.flaredb_workload import FlareClients, create_table
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.cluster.services import flaredb_url
from plasmacloud.common.tls import client_context
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import scratch_netns_spec
from plasmacloud.lab.reference import ETCD
from plasmacloud.lab.services import CHAINFIRE, FLAREDB, ServiceSpec
from plasmacloud.lab.spec import LabSpec, scratch_spec
from plasmacloud.lab.target import lab_target
from plasmacloud.validate.checks import run_checks

READY_TIMEOUT_S = 90.0
ACK_BUDGET_S = 30.0  # give up on a failover after this long
ATTEMPT_TIMEOUT_S = 0.5
console = Console(width=max(120, shutil.get_terminal_size().columns))


@dataclass
class ColdStart:
    """One cold start: seconds to ready and to all checks green (None: never)."""

    case: str
    ready_s: float | None = None
    green_s: float | None = None
    failing: list[str] = field(default_factory=list)


@dataclass
class Failover:
    """Kill-to-next-acknowledged-write times of one service, one per round."""

    system: str
    times_s: list[float | None] = field(default_factory=list)

    @property
    def median_s(self) -> float | None:
        done = [t for t in self.times_s if t is not None]
        return statistics.median(done) if done else None


Writer = Callable[[str], Awaitable[None]]


async def cold_start(
    case: str, root: Path, spec: LabSpec, services: tuple[ServiceSpec, ...], backend: str
) -> tuple[ColdStart, Lab]:
    """Bring a lab up from nothing; return the timings and the running lab."""
    result = ColdStart(case)
    lab = Lab.open(root, spec, services=services, backend=backend)
    t0 = time.perf_counter()
    await asyncio.to_thread(lab.up)
    await lab.wait_ready(timeout=READY_TIMEOUT_S)
    result.ready_s = time.perf_counter() - t0
    checks = await run_checks(lab_target(lab))
    result.failing = [c.check_id for c in checks if not c.ok]
    if not result.failing:
        result.green_s = time.perf_counter() - t0
    return result, lab


def etcd_writer(lab: Lab) -> tuple[Writer, Callable[[], Awaitable[None]]]:
    """A Put through one named node (etcd v3 API: Chainfire and etcd alike), and a closer."""
    channels = {c.node_id: dial(client_target(c), lab.operator_tls) for c in lab.configs()}
    n = 0

    async def write(node: str) -> None:
        nonlocal n
        n += 1
        req = rpc_pb2.PutRequest(key=b"/bench/failover/%d" % n, value=b"v")
        await rpc_pb2_grpc.KVStub(channels[node]).Put(req, timeout=ATTEMPT_TIMEOUT_S)

    async def close() -> None:
        for ch in channels.values():
            await ch.close()

    return write, close


async def flaredb_writer(lab: Lab) -> tuple[Writer, Callable[[], Awaitable[None]]]:
    """An INSERT through one named node, and a closer."""
    ssl_ctx = client_context(lab.operator_tls) if lab.spec.tls else None
    fc = FlareClients({c.node_id: flaredb_url(c) for c in lab.configs()}, ssl_ctx, "bench")
    await create_table(fc)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S))
    n = 0

    async def write(node: str) -> None:
        nonlocal n
        n += 1
        doc = await fc.post(
            session,
            node,
            "/db/execute",
            [["INSERT INTO bench(e) VALUES(?)", f"r{n}-{time.time()}"]],
        )
        if "error" in doc["results"][0]:
            raise aiohttp.ClientError(doc["results"][0]["error"])

    return write, session.close


async def flaredb_leader(lab: Lab) -> str | None:
    """The node FlareDB's /status names as leader (asked of the first node answering)."""
    ssl_ctx = client_context(lab.operator_tls) if lab.spec.tls else None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for cfg in lab.configs():
            try:
                async with session.get(flaredb_url(cfg) + "/status", ssl=ssl_ctx or True) as r:
                    leader = (await r.json())["store"]["leader"]["node_id"]
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                continue
            if leader:
                return str(leader)
    return None


async def failover_round(lab: Lab, leader: str, write: Writer) -> float | None:
    """kill -9 ``leader``'s node; seconds until a write through the others is acknowledged."""
    await asyncio.to_thread(lab.backend.kill_node, leader, signal.SIGKILL)
    t0 = time.perf_counter()
    rest = [n for n in lab.spec.node_ids if n != leader]
    elapsed: float | None = None
    i = 0
    while time.perf_counter() - t0 < ACK_BUDGET_S:
        try:
            await write(rest[i % len(rest)])
        except (grpc.aio.AioRpcError, aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            i += 1
            await asyncio.sleep(0.01)
            continue
        elapsed = time.perf_counter() - t0
        break
    await asyncio.to_thread(lab.backend.start_node, leader)
    await lab.wait_ready(timeout=READY_TIMEOUT_S)
    return elapsed


async def failovers(
    system: str,
    lab: Lab,
    leader_of: Callable[[], Awaitable[str | None]],
    writer: tuple[Writer, Callable[[], Awaitable[None]]],
    rounds: int,
) -> Failover:
    """``rounds`` kill-the-leader measurements of one service."""
    write, close = writer
    result = Failover(system)
    try:
        for _ in range(rounds):
            await lab.wait_ready(timeout=READY_TIMEOUT_S)
            await write(lab.spec.node_ids[0])  # warm the channels
            leader = await leader_of()
            if leader is None:
                result.times_s.append(None)
                continue
            result.times_s.append(await failover_round(lab, leader, write))
    finally:
        await close()
    return result


async def chainfire_leader(lab: Lab) -> str | None:
    return (await lab.probe()).leader_node


async def main(args: argparse.Namespace) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="plasma-bench-lab-"))
    starts: list[ColdStart] = []
    fails: list[Failover] = []
    labs: list[Lab] = []
    phases: dict[str, float] = {}
    qemu_checks: dict[str, float] = {}
    try:
        cases: list[tuple[str, LabSpec, tuple[ServiceSpec, ...], str]] = [
            ("process (chainfire+flaredb)", scratch_spec(), (CHAINFIRE, FLAREDB), "process"),
        ]
        if not args.skip_netns and os.geteuid() == 0 and shutil.which("ip"):
            cases.append(
                ("netns (chainfire+flaredb)", scratch_netns_spec(), (CHAINFIRE, FLAREDB), "netns")
            )
        cases.append(("etcd 3.4 (process)", scratch_spec(), (ETCD,), "process"))
        for i, (case, spec, services, backend) in enumerate(cases):
            try:
                result, lab = await cold_start(case, root / f"lab{i}", spec, services, backend)
            except LabError as exc:
                console.print(f"[red]{case}: {exc}[/red]")
                starts.append(ColdStart(case, failing=[str(exc)]))
                continue
            labs.append(lab)
            starts.append(result)
            console.print(
                f"cold start {case}: ready {_s(result.ready_s)}, green {_s(result.green_s)}"
            )
            if backend != "process":
                lab.down()
                labs.remove(lab)
                continue
            systems = ["etcd 3.4"] if ETCD in services else ["chainfire", "flaredb"]
            for system in systems:
                if system == "flaredb":
                    leader_of, writer = partial(flaredb_leader, lab), await flaredb_writer(lab)
                else:
                    leader_of, writer = partial(chainfire_leader, lab), etcd_writer(lab)
                fails.append(await failovers(system, lab, leader_of, writer, args.rounds))
            console.print(f"failover measured on {case}")
        if args.qemu:
            console.print("qemu cold start (three VMs PXE-boot and get installed; minutes)")
            phases = await asyncio.to_thread(lab_qemu.run, root / "qemu", False, qemu_checks)
    finally:
        for lab in labs:
            lab.down()
        shutil.rmtree(root, ignore_errors=True)
    report(starts, fails)
    if args.qemu:
        lab_qemu.report(phases, qemu_checks)
    return {
        "cold_start": [asdict(s) for s in starts],
        "failover": [asdict(f) for f in fails],
        "qemu_cold_start": {"phases_s": phases, "checks_s": qemu_checks},
    }


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def report(starts: list[ColdStart], fails: list[Failover]) -> None:
    """Print both tables; ratios are against etcd measured in the same run."""
    etcd_start = next((s for s in starts if s.case.startswith("etcd")), None)
    table = Table(title="cold start: empty dir -> ready -> all checks green (target <= 10 s)")
    for col in ("case", "ready", "all green", "vs etcd (green)", "failing checks"):
        table.add_column(col)
    for s in starts:
        ratio = (
            f"{s.green_s / etcd_start.green_s:.2f}x"
            if s.green_s and etcd_start and etcd_start.green_s
            else "-"
        )
        table.add_row(s.case, _s(s.ready_s), _s(s.green_s), ratio, ", ".join(s.failing) or "-")
    console.print(table)
    etcd_fail = next((f for f in fails if f.system.startswith("etcd")), None)
    table = Table(title="failover: kill -9 the leader's node -> next acknowledged write (<= 2 s)")
    for col in ("system", "rounds", "median", "each", "vs etcd"):
        table.add_column(col)
    for f in fails:
        med, ref = f.median_s, etcd_fail.median_s if etcd_fail else None
        ratio = f"{med / ref:.2f}x" if med is not None and ref else "-"
        each = ", ".join(_s(t) for t in f.times_s)
        table.add_row(f.system, str(len(f.times_s)), _s(med), each, ratio)
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=3, help="failovers per system")
    parser.add_argument("--skip-netns", action="store_true", help="no netns cold start")
    parser.add_argument(
        "--qemu", action="store_true", help="also the QEMU lab's cold start (bench/lab_qemu.py)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    ns = parser.parse_args()
    doc = asyncio.run(main(ns))
    if ns.json:
        ns.json.write_text(json.dumps(doc, indent=2))
