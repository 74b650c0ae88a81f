"""node_ctl, the unit controller of the netns lab's nodes and the netbooted VMs: units
executed or forked from preloaded modules, tracked by pid and start time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasmacloud.lab.pids import start_time

# A unit that reports how it was started, then runs until stopped. xml.dom.minidom is
# something neither node_ctl nor the interpreter's start imports.
SCRIPT = """\
import json, os, sys, time
print(json.dumps({
    "argv": sys.argv,
    "preloaded": "xml.dom.minidom" in sys.modules,
    "cwd": os.getcwd(),
    "session_leader": os.getsid(0) == os.getpid(),
    "pid": os.getpid(),
}), flush=True)
time.sleep(600)
"""


def node_ctl(units: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "plasmacloud.lab.node_ctl", "--dir", str(units), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _report(units: Path, unit: str) -> dict[str, object]:
    log = units / f"{unit}.log"
    deadline = time.monotonic() + 30
    while not log.exists() or not log.read_text().strip():
        assert time.monotonic() < deadline, f"{unit} wrote nothing"
        time.sleep(0.05)
    return dict(json.loads(log.read_text().splitlines()[0]))


@pytest.fixture
def units(tmp_path: Path) -> Iterator[Path]:
    """Two units running SCRIPT with their names as arguments; stopped afterwards."""
    units = tmp_path / "units"
    units.mkdir()
    script = tmp_path / "unit.py"
    script.write_text(f"#!{sys.executable}\n{SCRIPT}")  # executable, as the image's plasma
    script.chmod(0o755)
    for name in ("a", "b"):
        (units / f"{name}.argv").write_text(json.dumps([str(script), name, "serve"]))
    yield units
    node_ctl(units, "stop", "a", "b")


def test_preloaded_units_are_forked_children_set_up_like_executed_ones(units: Path) -> None:
    done = node_ctl(units, "start", "--preload", "xml.dom.minidom", "a", "b")
    assert done.returncode == 0, done.stderr
    reports = {u: _report(units, u) for u in ("a", "b")}
    for unit, report in reports.items():
        # the unit's own argv, in its own session, in the units directory, and the
        # module node_ctl preloaded is already there
        assert report["argv"] == json.loads((units / f"{unit}.argv").read_text())
        assert report["preloaded"] is True
        assert report["cwd"] == str(units)
        assert report["session_leader"] is True
        assert (units / f"{unit}.pid").read_text().split()[0] == str(report["pid"])
    assert reports["a"]["pid"] != reports["b"]["pid"]
    assert node_ctl(units, "is-active", "a", "b").stdout.split() == ["active", "active"]
    done = node_ctl(units, "stop", "a")
    assert done.returncode == 0, done.stderr
    active = node_ctl(units, "is-active", "a", "b")
    assert active.stdout.split() == ["inactive", "active"] and active.returncode == 3


def test_units_without_preload_are_executed(units: Path) -> None:
    done = node_ctl(units, "start", "a")
    assert done.returncode == 0, done.stderr
    report = _report(units, "a")
    assert report["preloaded"] is False
    assert report["session_leader"] is True
    assert node_ctl(units, "is-active", "a").stdout.split() == ["active"]


def test_a_pid_with_another_start_time_is_not_the_unit(units: Path) -> None:
    # A pid file naming a live process that started at another time (a reused pid):
    # the unit is inactive, and neither kill nor stop signals that process.
    other = subprocess.Popen(["sleep", "600"])
    try:
        started = start_time(other.pid)
        assert started is not None
        (units / "a.pid").write_text(f"{other.pid} {started + 1}")
        assert node_ctl(units, "is-active", "a").stdout.split() == ["inactive"]
        node_ctl(units, "kill", "-s", "SIGKILL", "a")
        node_ctl(units, "stop", "a")
        assert other.poll() is None
        (units / "a.pid").write_text(f"{other.pid} {started}")
        assert node_ctl(units, "is-active", "a").stdout.split() == ["active"]
    finally:
        other.kill()
        other.wait()


def test_start_time_is_none_for_an_exited_process() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert start_time(proc.pid) is None
    assert start_time(os.getpid()) is not None
