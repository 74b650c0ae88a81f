#!/usr/bin/env python3
"""QEMU lab cold start to a green checklist (Chainfire + FlareDB), time per phase.

Phases (wall clock from ``plasma lab up --backend qemu`` on an empty lab directory):
image (build or cache hit), network (namespace, switch, dnsmasq, netboot server),
PXE (VM power-on until the last node fetched its iPXE script), install (until the last
node reported ``installed``: kernel+initrd download, boot, agent), formed (until the
checklist's probe sees a ready cluster) and validated (the Chainfire and FlareDB
checks green on every node).

Prints a table; never asserts. Everything stays inside the lab namespace / loopback.

    python bench/lab_qemu.py [--dir /tmp/bench-qemu] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from plasmacloud.lab.qemu import QemuBackend
from plasmacloud.lab.services import plasma_executable
from plasmacloud.provision.states import State

CHECKS = [
    "health",
    "chainfire.members",
    "chainfire.leader",
    "chainfire.crud",
    "flaredb.members",
    "flaredb.quorum",
    "flaredb.crud",
]


def _at(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def run(root: Path, keep: bool) -> dict[str, float]:
    """One cold start; returns seconds per phase (cumulative ends are printed too)."""
    # Chainfire + FlareDB: IAM in the VMs needs the lab's admin bootstrap (not yet here).
    backend = QemuBackend(root, services=["chainfire", "flaredb"])
    t0, wall0 = time.monotonic(), time.time()
    phases: dict[str, float] = {}
    try:
        backend.up()
        phases["image"] = backend.state.timings["image_s"]
        up_done = time.time()
        nodes = list(backend.provisioning().nodes)
        for node in nodes:
            backend.wait_state(node, State.INSTALLED, timeout=1800)
        data = backend.provisioning().nodes
        booted = max(_at(e.at) for n in nodes for e in data[n].events if e.step == "ipxe")
        installed = max(_at(data[n].updated_at or "") for n in nodes)
        phases["network + VMs started"] = up_done - wall0 - phases["image"]
        phases["PXE (last iPXE script)"] = booted - up_done
        phases["install (last installed)"] = installed - booted
        argv = [plasma_executable(), "lab", "qemu", "validate", "--dir", str(root)]
        ready0 = time.time()
        argv += ["--wait", "900", *(a for c in CHECKS for a in ("--check", c))]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1000, check=False)
        phases["formed + validated" + ("" if done.returncode == 0 else " (NOT green)")] = (
            time.time() - ready0
        )
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
        phases = run(root, args.keep)
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    table = Table(title="QEMU lab cold start (3 VMs, TCG unless KVM probes ok)")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, secs in phases.items():
        table.add_row(name, f"{secs:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
