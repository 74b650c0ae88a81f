#!/usr/bin/env python3
"""QEMU lab cold start to an all-green checklist (Chainfire, FlareDB, IAM, metrics,
Prometheus), time per phase.

Phases (wall clock from ``plasma lab up --backend qemu`` on an empty lab directory):
image (build or cache hit), network (namespace, switch, dnsmasq, netboot server),
PXE (VM power-on until the last node fetched its iPXE script), install (until the last
node reported ``installed``: kernel+initrd download, boot, agent), then formed +
validated (services start, Raft elections, IAM's admin bootstrap inside the lab
namespace, and the whole checklist green on every node).

Prints a table; never asserts. Everything stays inside the lab namespace / loopback.

    python bench/lab_qemu.py [--dir /tmp/bench-qemu] [--keep]

(``python bench/lab.py --qemu`` runs it after the process/netns/etcd cold starts.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from plasmacloud.lab.qemu import QemuBackend
from plasmacloud.lab.services import plasma_executable


def _at(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def run(root: Path, keep: bool, checks: dict[str, float]) -> dict[str, float]:
    """One cold start; returns seconds per phase and fills ``checks`` with the seconds
    each check of the final checklist run took."""
    backend = QemuBackend(root)  # the lab's services: Chainfire, FlareDB, IAM
    t0, wall0 = time.monotonic(), time.time()
    phases: dict[str, float] = {}
    try:
        backend.up()
        phases["image"] = backend.state.timings["image_s"]
        up_done = time.time()
        nodes = list(backend.provisioning().nodes)
        for node in nodes:
            backend.wait_installed(node, timeout=1800)
        data = backend.provisioning().nodes
        booted = max(_at(e.at) for n in nodes for e in data[n].events if e.step == "ipxe")
        installed = max(_at(data[n].updated_at or "") for n in nodes)
        phases["network + VMs started"] = up_done - wall0 - phases["image"]
        phases["PXE (last iPXE script)"] = booted - up_done
        phases["install (last installed)"] = installed - booted
        # formed: every service healthy and one agreed leader (IAM's admin bootstrapped);
        # validated: then the whole checklist green (per-check seconds printed too)
        for phase, only in (("formed", ["--check", "health"]), ("validated", [])):
            argv = [plasma_executable(), "lab", "qemu", "validate", "--dir", str(root)]
            start = time.time()
            done = subprocess.run(
                [*argv, "--wait", "900", "--json", *only],
                capture_output=True,
                text=True,
                timeout=1000,
                check=False,
            )
            green = "" if done.returncode == 0 else " (NOT green)"
            phases[phase + green] = time.time() - start
            if not only and done.stdout.startswith("{"):
                for check in json.loads(done.stdout)["checks"]:
                    checks[check["id"]] = check["seconds"]
        phases["total"] = time.monotonic() - t0
    finally:
        if not keep:
            backend.down()
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="lab directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="leave the lab running")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-qemu-"))
    try:
        checks: dict[str, float] = {}
        phases = run(root, args.keep, checks)
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(phases, checks)


def report(phases: dict[str, float], checks: dict[str, float]) -> None:
    """The phase table (target: all green within 3 min) and the slowest checks."""
    table = Table(title="QEMU lab cold start (3 VMs, TCG unless KVM probes ok; target <= 180 s)")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, secs in phases.items():
        table.add_row(name, f"{secs:.0f}")
    Console().print(table)
    slowest = sorted(checks.items(), key=lambda kv: -kv[1])
    Console().print("checks (s): " + ", ".join(f"{c} {secs:.1f}" for c, secs in slowest))


if __name__ == "__main__":
    main()
