"""`plasma cluster recover`'s command line: which mode runs, and the usage errors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.common.config import NodeConfig, PeerConfig
from plasmacloud.common.errors import EXIT_USAGE
from plasmacloud.lab.layout import LAB_DIR_ENV


def _config(tmp_path: Path) -> Path:
    """node01's config of three on a random 127.x.y.11-13, where nothing listens."""
    net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
    peers = [
        PeerConfig(node_id=f"node0{i}", hostname=f"node0{i}", ip=f"{net}.1{i}") for i in (1, 2, 3)
    ]
    cfg = NodeConfig(
        node_id="node01", hostname="node01", ip=f"{net}.11", peers=peers, data_dir=tmp_path
    )
    path = tmp_path / "cluster-config.json"
    cfg.dump(path)
    return path


def test_the_config_must_be_the_survivors_own(tmp_path: Path) -> None:
    argv = ["cluster", "recover", "--from", "node02", "--config", str(_config(tmp_path))]
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == EXIT_USAGE
    assert "node01's config, not node02's" in done.output


def test_without_a_lab_or_a_config_it_says_what_to_give(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LAB_DIR_ENV, raising=False)
    done = CliRunner().invoke(app, ["cluster", "recover", "--from", "node01"])
    assert done.exit_code == EXIT_USAGE
    assert "give --dir (a lab), --config (on the node)" in done.output


def test_a_node_without_chainfire_data_is_refused(tmp_path: Path) -> None:
    # the other members do not answer: no quorum
    argv = ["cluster", "recover", "--from", "node01", "--config", str(_config(tmp_path))]
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 1
    assert "no Chainfire data on this machine" in done.output
