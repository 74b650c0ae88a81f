"""A lab's upgrade (or downgrade): its services run another ``plasma`` from their next start.

``plasma cluster rolling-restart --dir D --upgrade /path/to/plasma`` switches the lab to
that executable (another venv's, a newer build's) and restarts the nodes one at a time, so
the cluster serves throughout with members of both versions for a while, as a real
cluster upgraded machine by machine does. The choice is saved in ``lab.json``: later
``plasma lab start`` / ``up`` keep running it; switching back is the same command with the
old executable.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.state import save_state

VERSION_TIMEOUT_S = 60.0


def plasma_version(plasma: str) -> str:
    """What ``plasma version`` says for that executable; LabError if it is not one."""
    found = shutil.which(plasma)
    if found is None:
        raise LabError(f"{plasma}: no such executable (give the new build's `plasma` command)")
    try:
        done = subprocess.run(
            [found, "version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{plasma} version: {exc}") from exc
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabError(
            f"{plasma} is not a working plasma (`version` exit {done.returncode}: {said})"
        )
    return version


def switch_plasma(lab: Lab, plasma: str) -> str:
    """Make the lab's services run ``plasma`` from their next start; its version."""
    version = plasma_version(plasma)
    lab.state.plasma = str(Path(shutil.which(plasma) or plasma).absolute())
    save_state(lab.layout.state_path, lab.state)
    return version
