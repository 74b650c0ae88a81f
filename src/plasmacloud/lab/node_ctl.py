"""A minimal unit controller for machines without systemd (the netns lab's nodes).

``python -m plasmacloud.lab.node_ctl --dir D start|stop|kill|is-active UNIT...`` answers
like the ``systemctl`` verbs the SSH backend uses: a unit is ``D/UNIT.argv`` (a JSON
argv list), started in its own session with its pid in ``D/UNIT.pid`` and output in
``D/UNIT.log``; ``is-active`` prints one state per unit and exits 0 only if all are
active (3 otherwise, as systemctl does). ``D/UNIT.pid`` holds the pid and its start time
(``/proc/PID/stat``); a pid is only signalled while that process still runs, so a reused
pid is never touched.

``start --preload MODULE...`` imports the modules once and forks each unit from this
process instead of executing its argv: the child runs the unit's ``argv[0]`` (a Python
script, the image's ``plasma``) with the unit's argv, finding the preloaded modules
imported. A netbooted VM's three services start that way: under emulation each spent
10-16 s of the one CPU importing the same asyncio, grpc, aiohttp and pydantic.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

from plasmacloud.lab.pids import start_time

STOP_GRACE_S = 10.0
EXIT_INACTIVE = 3  # systemctl is-active's code for "not active"


def _argv(root: Path, unit: str) -> list[str]:
    return list(json.loads((root / f"{unit}.argv").read_text()))


def _pid(root: Path, unit: str) -> int | None:
    """The unit's pid if the process recorded for it still runs, else ``None``."""
    try:
        pid, started = map(int, (root / f"{unit}.pid").read_text().split())
    except (FileNotFoundError, ValueError):
        return None
    return pid if start_time(pid) == started else None


def preload(modules: list[str]) -> None:
    """Import ``modules`` for the units forked after it."""
    gc.disable()  # as in the image's plasma script: collecting during imports is waste
    for module in modules:
        importlib.import_module(module)
    gc.freeze()  # the children's collections skip (and so do not copy) what is shared
    gc.enable()


def _run_forked(root: Path, argv: list[str], log: int) -> NoReturn:
    """In the forked child: what ``start``'s Popen would set up, then the script."""
    os.setsid()
    os.chdir(root)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")
    # The script's SystemExit (or this one) unwinds to the interpreter's exit, as for
    # `python3 SCRIPT`: the child never returns into the parent's loop over units.
    raise SystemExit(0)


def start(root: Path, unit: str, fork: bool = False) -> None:
    """Start the unit unless it runs already: execute its argv, or with ``fork`` run it
    in a child of this process (see :func:`preload`)."""
    if _pid(root, unit) is not None:
        return
    argv = _argv(root, unit)
    with (root / f"{unit}.log").open("ab") as log:
        if fork:
            sys.stdout.flush()  # nothing buffered here may be written twice
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _run_forked(root, argv, log.fileno())
        else:
            pid = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                start_new_session=True,  # outlives the ssh session; signals reach only it
            ).pid
    # An exited unit records no start time (0 matches none): it is inactive.
    (root / f"{unit}.pid").write_text(f"{pid} {start_time(pid) or 0}")


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
    p.add_argument(
        "--preload",
        action="append",
        default=[],
        metavar="MODULE",
        help="start: import MODULE once and fork the units from this process",
    )
    p.add_argument("units", nargs="+")
    ns = p.parse_args(args)
    root: Path = ns.dir
    if ns.verb == "is-active":
        states = ["active" if _pid(root, u) is not None else "inactive" for u in ns.units]
        print("\n".join(states))
        return 0 if all(s == "active" for s in states) else EXIT_INACTIVE
    if ns.verb == "start" and ns.preload:
        preload(ns.preload)
    for unit in ns.units:
        if ns.verb == "start":
            start(root, unit, fork=bool(ns.preload))
        elif ns.verb == "stop":
            stop(root, unit)
        else:
            kill(root, unit, signal.Signals[ns.signal])
    return 0


if __name__ == "__main__":
    sys.exit(main())
