"""CPU time of each step of a 10,000-row bulk insert, in one process (no network, no Raft).

The lab benchmark (bench/flaredb.py) times one bulk request end to end, which on a shared
machine swings by 2x between runs; this measures the node's own work per step with
``time.process_time`` (median of --runs), so two versions of the code can be compared:

    python bench/flaredb_cpu.py [--runs 9] [--rows 10000]

Steps: parse (request body -> statements), rewrite (determinism), encode (Raft entry),
apply (decode + SQLite, as every replica does), response (JSON body).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from plasmacloud.flaredb.command import Command
from plasmacloud.flaredb.http_api import _deterministic
from plasmacloud.flaredb.models import Response, parse_request, parse_runs
from plasmacloud.flaredb.store import SQLiteStore
from plasmacloud.raft.api import Entry

STEPS = ("parse", "rewrite", "encode", "apply", "response")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--rows", type=int, default=10_000)
    args = ap.parse_args()
    body = json.dumps([["INSERT INTO t(v) VALUES(?)", "x" * 256]] * args.rows).encode()
    times: dict[str, list[float]] = {s: [] for s in (*STEPS, "total")}
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "db.sqlite")
        create = Command.new(parse_request(b'["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"]'))
        store.apply([Entry(1, 1, create.encode())])
        size = 0
        for run in range(args.runs):
            marks = [time.process_time()]
            runs = parse_runs(body)
            marks.append(time.process_time())
            rewritten = _deterministic(runs)
            marks.append(time.process_time())
            data = Command.from_runs(rewritten).encode()
            marks.append(time.process_time())
            (results,) = store.apply([Entry(run + 2, 1, data)])
            marks.append(time.process_time())
            for r in results:
                r.time = None  # as the server answers without ?timings
            Response(results).dumps().encode()
            marks.append(time.process_time())
            for step, a, b in zip(STEPS, marks[:-1], marks[1:], strict=True):
                times[step].append(b - a)
            times["total"].append(marks[-1] - marks[0])
            size = len(data)
        store.close()
    print(f"{args.rows:,} rows, entry {size / 1e6:.2f} MB, CPU ms (median of {args.runs}):")
    print("  ".join(f"{k} {1e3 * statistics.median(v):.1f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
