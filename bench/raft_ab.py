#!/usr/bin/env python3
"""A/B of the Raft engine alone: several source trees side by side, in rounds.

Each variant is a ``src`` directory holding a ``plasmacloud`` package (e.g. an older
checkout's). Every variant runs as three processes on their own loopback addresses, with
what Chainfire runs under them (mTLS peer connections, uvloop, fdatasync'd logs on disk)
but no gRPC: the process of ``n1`` (which leads: the others have long election timeouts)
also runs the proposers, 256-byte proposals at a fixed concurrency into an in-memory state
machine. All variants are up at once; each round loads every variant in turn (order
reversed on odd rounds) and records proposals/s, p50/p99 and the CPU time per proposal of
the leader process (proposers included, the same code in every variant) and of the
followers (from /proc), and proposals per leader fdatasync. Prints every round and the medians;
never asserts.

    python bench/raft_ab.py --rounds 6 before=/tmp/before/src after=src
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

CERT_DAYS = "2"


@dataclasses.dataclass
class Round:
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    leader_cpu_us: float  # per proposal, proposers included
    follower_cpu_us: float  # per proposal, mean of the followers
    per_fsync: float  # proposals per leader fdatasync (the batch size)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _members() -> dict[str, str]:
    net = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
    return {f"n{i}": f"{net}.{i}:{_free_port(f'{net}.{i}')}" for i in (1, 2, 3)}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    """A CA and one certificate for all nodes (peers skip host name checks, as Chainfire's do)."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", CERT_DAYS,
             "-subj", "/CN=raft-ab-ca")  # fmt: skip
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(d / "node.key"), "-out", str(d / "node.csr"),
             "-subj", "/CN=raft-ab-node")  # fmt: skip
    _openssl("x509", "-req", "-in", str(d / "node.csr"), "-CA", str(d / "ca.pem"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "node.pem"),
             "-days", CERT_DAYS)  # fmt: skip


# --- child process: one Raft node (n1 also proposes) ---------------------------------------


async def _child(node_id: str, members: dict[str, str], data: Path, pki: Path) -> None:
    import ssl

    from prometheus_client import CollectorRegistry

    from plasmacloud.raft.memory import MemoryStateMachine
    from plasmacloud.raft.node import RaftConfig, RaftNode

    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    server.load_cert_chain(str(pki / "node.pem"), str(pki / "node.key"))
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    client.load_cert_chain(str(pki / "node.pem"), str(pki / "node.key"))
    client.check_hostname = False
    host, port = members[node_id].rsplit(":", 1)
    timeout = (0.3, 0.6) if node_id == "n1" else (5.0, 10.0)
    cfg = RaftConfig(
        node_id,
        data / node_id,
        host,
        int(port),
        members,
        election_timeout=timeout,
        server_ssl=server,
        client_ssl=client,
        snapshot_threshold=100_000,  # as Chainfire runs it
        registry=(registry := CollectorRegistry()),
    )
    node = RaftNode(cfg, MemoryStateMachine())
    await node.start()
    if node_id != "n1":
        await asyncio.Event().wait()  # until the parent terminates us
    async with asyncio.timeout(60):
        while not node.is_leader:
            await asyncio.sleep(0.05)
    value = b"v" * 256
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        concurrency, seconds = json.loads(line)
        before = _fsyncs(registry)
        result = await _load(node, value, concurrency, seconds)
        result["fsyncs"] = _fsyncs(registry) - before
        print(json.dumps(result), flush=True)
    await node.stop()


def _fsyncs(registry: Any) -> float:
    """The leader's log fdatasyncs so far (from its raft metrics)."""
    return float(registry.get_sample_value("raft_fsync_duration_seconds_count") or 0)


async def _load(node: Any, value: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def proposer() -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            await node.propose(value)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(proposer() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    n = max(len(latencies), 1)
    return {
        "ops": len(latencies),
        "ops_per_s": len(latencies) / elapsed,
        "p50_ms": latencies[n // 2] * 1000 if latencies else 0.0,
        "p99_ms": latencies[int(n * 0.99) - 1] * 1000 if latencies else 0.0,
    }


# --- parent: variants, rounds, CPU accounting -----------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by one process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Variant:
    name: str
    procs: dict[str, subprocess.Popen[str]]

    @property
    def leader(self) -> subprocess.Popen[str]:
        return self.procs["n1"]

    def ask(self, concurrency: int, seconds: float) -> dict[str, float]:
        """Have the leader's process run the proposers for ``seconds``; its results."""
        stdin, stdout = self.leader.stdin, self.leader.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps([concurrency, seconds]) + "\n")
        stdin.flush()
        return dict(json.loads(_readline(stdout)))


def _readline(stream: IO[str]) -> str:
    line = stream.readline()
    if not line:
        raise RuntimeError("a leader process exited (see its stderr above)")
    return line


def start_variant(name: str, src: str, root: Path, pki: Path) -> Variant:
    """Start one variant's three processes; returns once its leader is ready."""
    members = _members()
    data = root / name
    data.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    procs = {}
    for node_id in members:
        cmd = [sys.executable, __file__, "--serve", node_id, "--members", json.dumps(members),
               "--dir", str(data), "--pki", str(pki)]  # fmt: skip
        procs[node_id] = subprocess.Popen(
            cmd, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
    v = Variant(name, procs)
    assert v.leader.stdout is not None
    if _readline(v.leader.stdout).strip() != "ready":
        raise RuntimeError(f"{name}: the leader did not come up")
    return v


def one_round(v: Variant, concurrency: int, seconds: float) -> Round:
    """Warm up, then load one variant and account its processes' CPU time."""
    v.ask(concurrency, seconds / 2)  # warm-up
    pids = {n: p.pid for n, p in v.procs.items()}
    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
    r = v.ask(concurrency, seconds)
    used = {n: cpu_seconds(pid) - before[n] for n, pid in pids.items()}
    ops = max(r["ops"], 1)
    followers = [used[n] for n in used if n != "n1"]
    return Round(r["ops_per_s"], r["p50_ms"], r["p99_ms"], used["n1"] / ops * 1e6,
                 statistics.mean(followers) / ops * 1e6, ops / max(r["fsyncs"], 1))  # fmt: skip


def _fmt(r: Round) -> str:
    return (
        f"{r.ops_per_s:7,.0f}/s p50 {r.p50_ms:6.2f} p99 {r.p99_ms:7.2f} ms; CPU per proposal: "
        f"leader+proposers {r.leader_cpu_us:5,.0f} us, follower {r.follower_cpu_us:5,.0f} us; "
        f"{r.per_fsync:5.1f} per fsync"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", help="NAME=SRC_DIR")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--members", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(_child(args.serve, json.loads(args.members), Path(args.dir), Path(args.pki)))
        return
    root = Path(tempfile.mkdtemp(prefix="raft-ab-"))
    variants: list[Variant] = []
    results: dict[str, list[Round]] = {}
    try:
        make_pki(root)
        for spec in args.variants:
            name, _, src = spec.partition("=")
            variants.append(start_variant(name, src, root, root))
            results[name] = []
        for i in range(args.rounds):
            for v in variants if i % 2 == 0 else list(reversed(variants)):
                r = one_round(v, args.concurrency, args.seconds)
                results[v.name].append(r)
                print(f"round {i} {v.name:10} {_fmt(r)}", flush=True)
    finally:
        for v in variants:
            for p in v.procs.values():
                p.terminate()
            for p in v.procs.values():
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(root, ignore_errors=True)
    print("medians:")
    for name, rounds in results.items():
        columns = zip(*map(dataclasses.astuple, rounds), strict=True)
        print(f"  {name:10} {_fmt(Round(*(statistics.median(c) for c in columns)))}")


if __name__ == "__main__":
    main()
