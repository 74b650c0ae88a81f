"""Shared fixtures: a rendered tree with a CA and every certificate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from plasmacloud.provision.sample import sample_spec

from .helpers import run_plasma


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendered tree with a CA and every certificate (copied per test)."""
    root = tmp_path_factory.mktemp("tree")
    (root / "cluster.yaml").write_text(sample_spec())
    spec, out = str(root / "cluster.yaml"), str(root / "out")
    assert run_plasma("render", "--spec", spec, "--out", out)[0] == 0
    code, output = run_plasma("pki", "init", "--spec", spec, "--out", out)
    assert code == 0, output
    assert output.count("issued") == 3
    return root


@pytest.fixture
def tree(issued: Path, tmp_path: Path) -> Path:
    shutil.copytree(issued, tmp_path / "t", symlinks=True)
    return tmp_path / "t"
