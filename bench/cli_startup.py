#!/usr/bin/env python3
"""How long ``plasma --help`` takes to answer, beside ``etcdctl --help`` in the same run.

Each command runs ``--runs`` times as a fresh process (subprocess, output discarded);
prints min and median wall time per command and their ratio to etcdctl's, with two
floors on this host: a bare ``python -c pass``, and a one-command Typer app with
``plasma``'s rich help (what Typer and Rich cost before any of our code). The ``plasma``
measured is the console script installed next to this Python (not a pyenv shim, whose
bash wrapper would be counted too); the environment, including PYTHONPATH, is passed on,
so from a worktree it measures that tree. Target (issue 14): ``plasma --help`` and
``plasma lab --help`` under 0.3 s. Never asserts.

    python bench/cli_startup.py [--runs 20] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def plasma_script() -> list[str]:
    """The argv prefix that runs the installed ``plasma`` without a shim in between."""
    beside = Path(sys.executable).parent / "plasma"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from plasmacloud.cli import app; app()"]


# the smallest app with plasma's Typer settings: the floor of `plasma --help`
TYPER_FLOOR = """
import typer
app = typer.Typer(name="floor", help="floor", no_args_is_help=True, rich_markup_mode="rich")
@app.command()
def one() -> None:
    \"\"\"One command.\"\"\"
@app.command()
def two() -> None:
    \"\"\"Another.\"\"\"
app()
"""


def measure(argv: list[str], runs: int) -> list[float]:
    """Wall times of ``runs`` runs of ``argv``; each must exit 0."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    plasma = plasma_script()
    commands = {
        "plasma --help": [*plasma, "--help"],
        "plasma lab --help": [*plasma, "lab", "--help"],
        "typer floor --help": [sys.executable, "-c", TYPER_FLOOR, "--help"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    etcdctl = shutil.which("etcdctl")
    if etcdctl:
        commands["etcdctl --help"] = [etcdctl, "--help"]
    else:
        print("etcdctl not found: measuring plasma only", file=sys.stderr)

    results = {}
    for name, argv in commands.items():
        times = measure(argv, args.runs)
        results[name] = {"min_s": min(times), "median_s": statistics.median(times)}
    base = results.get("etcdctl --help")
    print(f"{'command':<20} {'min':>9} {'median':>9} {'x etcdctl (median)':>20}")
    for name, r in results.items():
        ratio = f"{r['median_s'] / base['median_s']:.0f}x" if base else "-"
        print(f"{name:<20} {r['min_s'] * 1000:7.1f}ms {r['median_s'] * 1000:7.1f}ms {ratio:>20}")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
