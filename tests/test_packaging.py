"""The wheel a new user builds works on its own (issue 18 item 6).

A clean clone of this repository's HEAD (committed work only: the generated gRPC stubs
are gitignored, so they exist only if the build hook makes them) is built with
``python -m build``; the wheel goes into a fresh venv outside the source tree, with
PYTHONPATH unset, and that venv's ``plasma`` brings up a 3-node lab and validates it.
The venv's pip installs every runtime dependency itself (its cache may serve them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from plasmacloud.lab.control import Lab
from plasmacloud.lab.state import load_state

REPO = Path(__file__).resolve().parents[1]
PROTO_PACKAGE = "plasmacloud/chainfire/proto"
TEMPLATES = "plasmacloud/provision/templates"
DASHBOARD_STATIC = "plasmacloud/dashboard/static"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run one step; its stdout, or a failure naming the step with its output's tail."""
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory outside the source tree for the clone, dist and venv; removed after."""
    root = Path(tempfile.mkdtemp(prefix="plasmacloud-wheel-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stub_runtime_versions(whl: zipfile.ZipFile) -> dict[str, Version]:
    """The grpcio and protobuf releases the wheel's stubs check for when imported."""
    grpc_stub = whl.read(f"{PROTO_PACKAGE}/rpc_pb2_grpc.py").decode()
    pb_stub = whl.read(f"{PROTO_PACKAGE}/rpc_pb2.py").decode()
    grpc = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", grpc_stub)
    pb = re.search(r"# Protobuf Python Version: (\S+)", pb_stub)
    assert grpc and pb, "the stubs no longer name the versions they need"
    return {"grpcio": Version(grpc[1]), "protobuf": Version(pb[1])}


def _requires_dist(whl: zipfile.ZipFile) -> dict[str, Requirement]:
    """The wheel's runtime requirements by distribution name."""
    (metadata,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
    reqs = [
        Requirement(line.removeprefix("Requires-Dist:").strip())
        for line in whl.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    return {r.name.lower(): r for r in reqs if r.marker is None}


def _outside_env(venv: Path) -> dict[str, str]:
    """The environment a user of the venv has: its bin first, no path into a source tree."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PLASMA_LAB_DIR")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _down(plasma: Path, lab_dir: Path, cwd: Path, env: dict[str, str]) -> str | None:
    """Stop the lab with the venv's ``plasma lab down``, then stop from here whatever that
    left (the lab's recorded PIDs), so no process outlives the test; what went wrong with
    the venv's own down, or None."""
    try:
        proc = subprocess.run(
            [str(plasma), "lab", "down", "--dir", str(lab_dir)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            return f"plasma lab down exited {proc.returncode}: {proc.stderr[-2000:]}"
        if Lab.open(lab_dir).running():
            return "processes still running after plasma lab down"
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"plasma lab down: {exc}"
    finally:
        Lab.open(lab_dir).down()


def test_wheel_from_a_clean_clone_installs_into_a_fresh_venv_and_runs_a_green_lab(
    scratch: Path, tmp_path: Path
) -> None:
    clone, dist, venv, work = (scratch / n for n in ("clone", "dist", "venv", "work"))
    work.mkdir()
    lab_dir = tmp_path / "lab"  # under pytest's tmp_path: its logs outlive a failure
    env = _outside_env(venv)

    _run(["git", "clone", "--quiet", REPO, clone], work, env, 120)
    protos = sorted(p.stem for p in (clone / "src" / PROTO_PACKAGE).glob("*.proto"))
    assert protos, "the clone has no .proto files"
    assert not list((clone / "src" / PROTO_PACKAGE).glob("*_pb2*")), "stubs are not gitignored"

    # the venv is made while the build runs: on a busy 2-core host each takes tens of seconds
    making_venv = subprocess.Popen([sys.executable, "-m", "venv", str(venv)], cwd=work, env=env)
    try:
        _run([sys.executable, "-m", "build", "--outdir", dist, clone], clone, env, 600)
    finally:
        assert making_venv.wait(timeout=300) == 0, "python -m venv failed"

    (wheel,) = dist.glob("plasmacloud-*.whl")
    (sdist,) = dist.glob("plasmacloud-*.tar.gz")
    carried = {
        f"{PROTO_PACKAGE}/{name}{suffix}"
        for name in protos
        for suffix in (".proto", "_pb2.py", "_pb2_grpc.py")
    }
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
        needs = _stub_runtime_versions(whl)
        requires = _requires_dist(whl)
    for dist, generated in needs.items():  # an older runtime refuses the stubs at import
        floors = [Version(s.version) for s in requires[dist].specifier if s.operator == ">="]
        assert floors and max(floors) >= generated, (dist, str(requires[dist]), generated)
    assert carried | {"plasmacloud/py.typed"} <= in_wheel
    # provision's templates are package data, read through importlib.resources
    templates = {f"{TEMPLATES}/{p.name}" for p in (clone / "src" / TEMPLATES).glob("*.j2")}
    assert templates and templates <= in_wheel
    # so are the dashboard's page, script and stylesheet (its machines are offline: no CDN)
    static = {f"{DASHBOARD_STATIC}/{p.name}" for p in (clone / "src" / DASHBOARD_STATIC).iterdir()}
    assert static and static <= in_wheel
    with tarfile.open(sdist) as tar:  # names start with plasmacloud-<version>/
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {f"src/{path}" for path in carried} <= in_sdist

    python, plasma = venv / "bin" / "python", venv / "bin" / "plasma"
    _run([python, "-m", "pip", "install", "--quiet", wheel], work, env, 900)
    assert "lab" in _run([plasma, "--help"], work, env, 120)
    stub_modules = [f"{name}{suffix}" for name in protos for suffix in ("_pb2", "_pb2_grpc")]
    script = "import plasmacloud, importlib\n"
    script += "".join(
        f"importlib.import_module('plasmacloud.chainfire.proto.{m}')\n" for m in stub_modules
    )
    installed = _run([python, "-c", script + "print(plasmacloud.__file__)"], work, env, 120)
    assert Path(installed.strip()).is_relative_to(venv), installed

    junit = tmp_path / "validate.xml"
    down_problem: str | None = None
    try:
        _run(
            [plasma, "lab", "up", "--dir", lab_dir, "--scratch", "--validate", "--junit", junit],
            work,
            env,
            600,
        )
        state = load_state(lab_dir / "lab.json")
        assert state is not None and state.processes
        assert {p.argv[0] for p in state.processes} == {str(plasma)}  # the wheel's code ran
        suite = ET.parse(junit).getroot().find("testsuite")
        assert suite is not None
        assert int(suite.get("tests", "0")) > 0 and suite.get("failures") == "0"
    finally:
        if (lab_dir / "lab.json").exists():
            down_problem = _down(plasma, lab_dir, work, env)
    assert down_problem is None, down_problem
