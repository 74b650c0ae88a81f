#!/usr/bin/env python3
"""Chainfire's state machine alone: time to apply committed puts, and to take a snapshot.

What every member pays per replicated put after Raft has committed it: ``MvccStore.apply``
on batches of encoded PutRequests (8-byte keys, 256-byte values) in a scratch directory,
then one ``snapshot()`` of the resulting database. Bounded by ``--puts``; prints, never
asserts. See docs/adr/003-chainfire-write-path.md.

    python bench/chainfire_apply.py [--batch 64] [--puts 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from plasmacloud.chainfire.commands import encode
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.proto import rpc_pb2
from plasmacloud.raft.api import Entry

VALUE = os.urandom(256)
KEYS = 100_000


def batches(batch: int, puts: int) -> list[list[Entry]]:
    """Consecutive committed entries, ``batch`` per apply call."""
    out: list[list[Entry]] = []
    for first in range(1, puts + 1, batch):
        out.append(
            [
                Entry(i, 1, encode(rpc_pb2.PutRequest(key=b"%08d" % (i % KEYS), value=VALUE)))
                for i in range(first, min(first + batch, puts + 1))
            ]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="entries per apply call")
    parser.add_argument("--puts", type=int, default=20_000, help="puts in total")
    args = parser.parse_args()
    work = batches(args.batch, args.puts)
    with tempfile.TemporaryDirectory(prefix="plasma-apply-") as tmp:
        store = MvccStore(Path(tmp) / "kv.db")
        try:
            times = []
            for entries in work:
                t0 = time.perf_counter()
                store.apply(entries)
                times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            snap = store.snapshot()
            snap_s = time.perf_counter() - t0
        finally:
            store.close()
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(
        f"{args.puts} puts in batches of {args.batch}: {sum(times) / args.puts * 1e6:.0f} us "
        f"per put; batch p50 {statistics.median(times) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
        f"max {times[-1] * 1e3:.1f} ms; snapshot of {len(snap) / 1e6:.1f} MB in "
        f"{snap_s * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
