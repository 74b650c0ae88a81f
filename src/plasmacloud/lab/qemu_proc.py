"""Processes the QEMU lab starts (switch, dnsmasq, netboot server, VMs), recorded by PID.

Every record keeps the argv it was started with; before a signal is sent, the live
``/proc/PID/cmdline`` must still end with it, so a PID the kernel reused for some other
program is never touched. Nothing is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from plasmacloud.lab.pids import runs_argv


class Proc(BaseModel):
    """One process the lab started."""

    model_config = ConfigDict(extra="forbid")

    role: str  # "switch", "dnsmasq", "netboot", "vm:node01"
    pid: int
    argv: list[str]
    log: str | None = None

    def alive(self) -> bool:
        """True while ``pid`` still runs the argv we started."""
        return runs_argv(self.pid, self.argv)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once it is gone."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if not self.alive():
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.05)
        if self.alive():
            raise RuntimeError(f"{self.role} (pid {self.pid}) survived SIGKILL")


def spawn(role: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Start ``argv`` in its own session with stdout+stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    return Proc(role=role, pid=proc.pid, argv=argv, log=str(log))


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll ``check()`` until it is truthy; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
