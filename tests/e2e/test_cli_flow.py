"""The operator's flow, as shell commands: `plasma lab up`, `eval "$(plasma lab env)"`,
etcdctl, `plasma lab status/stop/start/validate`, `plasma lab down`."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE
from plasmacloud.lab.control import Lab
from plasmacloud.lab.pids import cmdline
from plasmacloud.lab.services import SERVICES, plasma_executable
from plasmacloud.lab.spec import scratch_spec

pytestmark = pytest.mark.slow


def sh(script: str, lab_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a bash snippet the way an operator would, with PLASMA_LAB_DIR set."""
    plasma_bin = str(Path(plasma_executable()).parent)
    env = {**os.environ, "PLASMA_LAB_DIR": str(lab_dir), "COLUMNS": "200"}
    env["PATH"] = f"{plasma_bin}:{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def lab_dir(tmp_path: Path) -> Iterator[Path]:
    # a scratch address range saved in lab.json, so `plasma lab up` uses it, not 127.0.0.11
    Lab.open(tmp_path, scratch_spec()).prepare()
    try:
        yield tmp_path
    finally:
        Lab.open(tmp_path).down()


def test_up_env_etcdctl_status_stop_start_down(lab_dir: Path) -> None:
    up = sh("plasma lab up --json", lab_dir)
    assert up.returncode == EXIT_OK, up.stdout + up.stderr
    doc = json.loads(up.stdout)
    assert doc["ready"] is True and doc["leader"] in ("node01", "node02", "node03")
    pids = [p["pid"] for n in doc["nodes"] for p in n["processes"]]
    assert len(pids) == 3 * len(SERVICES)

    flow = sh(
        'eval "$(plasma lab env)"; etcdctl member list; etcdctl put k v; etcdctl get k', lab_dir
    )
    assert flow.returncode == 0, flow.stderr
    lines = flow.stdout.splitlines()
    assert sum(1 for ln in lines if ", started, node0" in ln) == 3
    assert lines[-3:] == ["OK", "k", "v"]

    stopped = sh("plasma lab stop node02; plasma lab status --json", lab_dir)
    assert stopped.returncode == EXIT_UNAVAILABLE
    status = json.loads(stopped.stdout[stopped.stdout.index("{") :])
    assert status["ready"] is False
    node02 = next(n for n in status["nodes"] if n["node"] == "node02")
    assert [p["running"] for p in node02["processes"]] == [False] * len(SERVICES)
    # --wait and --check work on this backend as on the qemu lab's
    waited = sh("plasma lab validate --wait 1 --check health", lab_dir)
    assert waited.returncode == EXIT_FAILURE, waited.stdout + waited.stderr
    assert "not ready yet" in waited.stdout and "node02" in waited.stdout

    junit = lab_dir / "validate.xml"
    back = sh(
        # `up` on a running lab starts nothing new and just waits until it is ready
        "plasma lab start node02 && plasma lab up --json >/dev/null && "
        f"plasma lab validate --json --junit {junit}",
        lab_dir,
    )
    assert back.returncode == EXIT_OK, back.stdout + back.stderr
    report = json.loads(back.stdout[back.stdout.index("{") :])
    assert report["ok"] is True
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    assert int(suite.get("tests") or 0) == 3 * len(report["checks"])
    only = sh("plasma lab validate --json --check health --check chainfire.leader", lab_dir)
    assert only.returncode == EXIT_OK, only.stdout + only.stderr
    assert [c["id"] for c in json.loads(only.stdout)["checks"]] == ["health", "chainfire.leader"]

    down = sh("plasma lab down", lab_dir)
    assert down.returncode == 0, down.stderr
    assert f"stopped {3 * len(SERVICES)} process(es)" in " ".join(down.stdout.split())
    assert all(cmdline(pid) is None for pid in pids)
    assert (lab_dir / "node01" / "data").exists(), "data persists across down unless --wipe"
