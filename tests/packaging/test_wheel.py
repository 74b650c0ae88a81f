"""The wheel built from a clean clone is all a user needs (besides the apt tools).

A clone of HEAD is built with ``python -m build`` (isolated: setup.py's hook generates the
gRPC stubs with the build requirements alone), the wheel is installed into a fresh venv
outside the source tree, and that venv's ``plasma`` brings a validated lab up and down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STUBS = ("rpc_pb2.py", "rpc_pb2_grpc.py", "kv_pb2.py", "auth_pb2.py")


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    # Outside the source tree: no PYTHONPATH or editable install may stand in for the wheel.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents printed one after another."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        doc, end = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        docs.append(doc)
        at = end
    return docs


def test_wheel_from_a_clean_clone_installs_and_runs_a_validated_lab(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    _run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), "."], clone, 600)
    (wheel,) = (tmp_path / "dist").glob("plasmacloud-*.whl")
    (sdist,) = (tmp_path / "dist").glob("plasmacloud-*.tar.gz")
    in_wheel = {Path(n).name for n in zipfile.ZipFile(wheel).namelist()}
    with tarfile.open(sdist) as tar:
        in_sdist = {Path(n).name for n in tar.getnames()}
    for stub in STUBS:
        assert stub in in_wheel, f"{stub} missing from the wheel"
        assert stub in in_sdist, f"{stub} missing from the sdist"
    assert {"rpc.proto", "gen_protos.py"} <= in_sdist

    venv, outside = tmp_path / "venv", tmp_path / "elsewhere"
    outside.mkdir()
    _run([sys.executable, "-m", "venv", str(venv)], outside, 120)
    _run([str(venv / "bin/pip"), "install", "-q", str(wheel)], outside, 900)
    python, plasma = str(venv / "bin/python"), str(venv / "bin/plasma")
    where = _run([python, "-c", "import plasmacloud; print(plasmacloud.__file__)"], outside, 60)
    assert str(venv) in where.stdout, where.stdout
    _run([python, "-c", "from plasmacloud.chainfire.proto import rpc_pb2_grpc"], outside, 60)
    assert "lab" in _run([plasma, "--help"], outside, 60).stdout

    lab = tmp_path / "lab"
    try:
        up = _run([plasma, "lab", "up", "--dir", str(lab), "--validate", "--json"], outside, 600)
        status, report = _documents(up.stdout)  # `lab up --json`: the lab, then the checklist
        assert status["ready"], status
        assert report["ok"] and report["checks"], report
        assert all(check["ok"] for check in report["checks"]), report
    finally:
        subprocess.run([plasma, "lab", "down", "--dir", str(lab)], cwd=outside, timeout=120)
