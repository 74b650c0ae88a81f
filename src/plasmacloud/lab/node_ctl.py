"""A minimal unit controller for machines without systemd (the netns lab's nodes).

``python -m plasmacloud.lab.node_ctl --dir D start|stop|kill|is-active UNIT...`` answers
like the ``systemctl`` verbs the SSH backend uses: a unit is ``D/UNIT.argv`` (a JSON
argv list), started in its own session with its pid in ``D/UNIT.pid`` and output in
``D/UNIT.log``; ``is-active`` prints one state per unit and exits 0 only if all are
active (3 otherwise, as systemctl does). A recorded pid is only signalled while it still
runs the unit's argv, so a reused pid is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from plasmacloud.lab.pids import runs_argv

STOP_GRACE_S = 10.0
EXIT_INACTIVE = 3  # systemctl is-active's code for "not active"


def _argv(root: Path, unit: str) -> list[str]:
    return list(json.loads((root / f"{unit}.argv").read_text()))


def _pid(root: Path, unit: str) -> int | None:
    """The unit's pid if it still runs the unit's argv, else ``None``."""
    try:
        pid = int((root / f"{unit}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if runs_argv(pid, _argv(root, unit)) else None


def start(root: Path, unit: str) -> None:
    """Start the unit unless it runs already."""
    if _pid(root, unit) is not None:
        return
    with (root / f"{unit}.log").open("ab") as log:
        proc = subprocess.Popen(
            _argv(root, unit),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,  # outlives the ssh session; signals reach only it
        )
    (root / f"{unit}.pid").write_text(str(proc.pid))


def kill(root: Path, unit: str, sig: signal.Signals) -> None:
    """Send ``sig`` to the unit's process group (nothing if it is not running)."""
    pid = _pid(root, unit)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)


def stop(root: Path, unit: str) -> None:
    """SIGTERM, SIGKILL after the grace period; returns once the unit is gone."""
    kill(root, unit, signal.SIGTERM)
    kill(root, unit, signal.SIGCONT)  # a stopped (SIGSTOP) unit only sees TERM once resumed
    deadline = time.monotonic() + STOP_GRACE_S
    while _pid(root, unit) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    kill(root, unit, signal.SIGKILL)
    while _pid(root, unit) is not None:
        time.sleep(0.05)


def main(args: list[str] | None = None) -> int:
    """Run one verb over the units; the exit code follows systemctl's."""
    p = argparse.ArgumentParser(prog="node_ctl")
    p.add_argument("--dir", type=Path, required=True, help="where UNIT.argv files live")
    p.add_argument("verb", choices=["start", "stop", "kill", "is-active"])
    p.add_argument("-s", "--signal", default="SIGTERM", help="kill: signal name")
    p.add_argument("units", nargs="+")
    ns = p.parse_args(args)
    root: Path = ns.dir
    if ns.verb == "is-active":
        states = ["active" if _pid(root, u) is not None else "inactive" for u in ns.units]
        print("\n".join(states))
        return 0 if all(s == "active" for s in states) else EXIT_INACTIVE
    for unit in ns.units:
        if ns.verb == "start":
            start(root, unit)
        elif ns.verb == "stop":
            stop(root, unit)
        else:
            kill(root, unit, signal.Signals[ns.signal])
    return 0


if __name__ == "__main__":
    sys.exit(main())
