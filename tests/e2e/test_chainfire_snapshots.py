"""Chainfire members taking snapshots under load (issue 17, item 1): a client writing at 64
in flight through three snapshot points on every member sees no election and no put
slower than 5 s, and every acknowledged put is there afterwards.

(The engine alone, with threads standing in for slow snapshot reads:
tests/raft/test_raft_node.py; the figures over 60 s beside etcd:
``bench/chainfire_vs_etcd.py --soak 60``.)
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.proto import rpc_pb2_grpc
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import CHAINFIRE
from plasmacloud.lab.workload import key_of, run_load

from .conftest import member_metrics, running_lab, with_flags

pytestmark = pytest.mark.slow

SNAPSHOT_EVERY = 1500  # entries; small, so a short run crosses three snapshot points
VALUE = os.urandom(1024)  # ~1 KiB a key: each snapshot copies a database of a few MiB
TIMEOUT_S = 5.0  # a put slower than this is a client timeout (issue 17)
MAX_S = 120.0  # the writing stops here even if the snapshots never came


async def write_until_snapshots(lab: Lab, acked: dict[bytes, bytes]) -> tuple[int, float]:
    """Put at 64 in flight until every member took 3 snapshots (or MAX_S); returns the
    failed puts and the slowest put's seconds."""
    cfg = lab.configs()[0]
    stop = time.monotonic() + MAX_S
    failed, slowest = 0, 0.0
    async with dial(client_target(cfg), lab.operator_tls) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)

        async def put(i: int) -> None:
            key = key_of(i % 4000, b"snap/")
            await kv.Put(pb.PutRequest(key=key, value=VALUE + b"%d" % i), timeout=TIMEOUT_S)
            acked[key] = VALUE + b"%d" % i

        i = 0
        while time.monotonic() < stop:
            result = await run_load(lambda n, base=i: put(base + n), 64, 2000, 10.0)
            i += result.ok + result.errors
            failed += result.errors
            slowest = max([slowest, *result.latencies_s])
            taken = [member_metrics(c).get("raft_snapshots_total", 0) for c in lab.configs()]
            if min(taken) >= 3:
                break
    return failed, slowest


def test_snapshot_points_under_load_cause_no_election(tmp_path: Path) -> None:
    chainfire = with_flags(CHAINFIRE, "--snapshot-threshold", str(SNAPSHOT_EVERY))
    with running_lab(tmp_path / "lab", (chainfire,)) as lab:
        configs = lab.configs()
        before = [member_metrics(c) for c in configs]
        acked: dict[bytes, bytes] = {}
        failed, slowest = asyncio.run(write_until_snapshots(lab, acked))
        after = [member_metrics(c) for c in configs]
        taken = [int(m.get("raft_snapshots_total", 0)) for m in after]
        print(f"snapshots per member {taken}, {len(acked)} keys, slowest put {slowest:.2f} s")
        assert min(taken) >= 3, f"not three snapshots on every member within {MAX_S:.0f} s"
        assert failed == 0 and slowest < TIMEOUT_S
        for b, a in zip(before, after, strict=True):  # no election, no new term
            assert a["raft_leader_changes_total"] == b["raft_leader_changes_total"]
            assert a["raft_term"] == b["raft_term"]

        async def stored() -> dict[bytes, bytes]:
            """Every snap/ key, in pages (all at once is over gRPC's 4 MiB message limit)."""
            out: dict[bytes, bytes] = {}
            start = b"snap/"
            async with dial(client_target(configs[2]), lab.operator_tls) as channel:
                kv = rpc_pb2_grpc.KVStub(channel)
                while True:
                    req = pb.RangeRequest(key=start, range_end=b"snap0", limit=500)
                    got = await kv.Range(req)
                    out.update((k.key, k.value) for k in got.kvs)
                    if not got.more:
                        return out
                    start = got.kvs[-1].key + b"\0"

        assert asyncio.run(stored()) == acked  # every acknowledged put, its last value
