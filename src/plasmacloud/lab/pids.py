"""Is a recorded PID still the process we started? (stdlib only: the node_ctl units
in a netbooted VM import this under emulation, where every import is slow.)

A record keeps the argv a process was started with; a PID counts as ours only while its
live ``/proc/PID/cmdline`` still ends with that argv, so a PID the kernel reused for
another program is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def cmdline(pid: int) -> list[str] | None:
    """argv of a live process, ``None`` if there is none (or it is a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:  # zombies and kernel threads have an empty cmdline
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child and has exited."""
    # When this process is the parent (tests, `lab up` itself) collect the exit status
    # so a dead child does not linger as a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# How long an empty cmdline of a live process is taken for an execve in progress.
EXEC_GRACE_S = 1.0


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` from field 3 (the state) on, None without such a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the command name before it may hold spaces


def _state(pid: int) -> str | None:
    """The state letter (R, S, Z...), None without such a process."""
    fields = _stat(pid)
    return fields[0] if fields else None


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot) if it is alive (not a zombie), else
    ``None``. With the pid it names one process for the machine's uptime: a reused pid
    has a later start time."""
    reap(pid)
    fields = _stat(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22, starttime


def children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``, e.g. a Chainfire member's frontend
    workers."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def runs_argv(pid: int, argv: list[str]) -> bool:
    """True if ``pid`` is alive and still runs ``argv``.

    A script's argv shows up after its interpreter (``python3 /x/plasma ...``), so
    ``argv`` must be the tail of the live cmdline.
    """
    reap(pid)
    deadline = time.monotonic() + EXEC_GRACE_S
    while True:
        live = cmdline(pid)
        if live is not None:
            return live[-len(argv) :] == argv
        # No argv: gone, a zombie, or in the middle of an execve (`ip netns exec`
        # handing over to the service), when the kernel shows an empty cmdline for a
        # moment. Taken for an exit, that made `lab up` tear a healthy network down.
        if _state(pid) in (None, "Z", "X") or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
