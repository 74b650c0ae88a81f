"""`plasma chainfire serve`: clear errors and exit codes before anything is served."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plasmacloud.chainfire.server import DataDirBusy, lock_data_dir
from plasmacloud.cli import app
from plasmacloud.common.errors import EXIT_USAGE

runner = CliRunner()


def test_missing_config_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["chainfire", "serve", "--config", str(tmp_path / "nope.json")])
    assert result.exit_code == EXIT_USAGE
    assert "no such file" in result.output


def test_invalid_config_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "cluster-config.json"
    path.write_text(json.dumps({"node_id": "node01", "hostname": "node01", "ip": "not-an-ip"}))
    result = runner.invoke(app, ["chainfire", "serve", "--config", str(path)])
    assert result.exit_code == EXIT_USAGE
    assert "ip" in result.output and "peers" in result.output


def test_missing_tls_files_are_named(tmp_path: Path) -> None:
    cfg = {
        "node_id": "node01",
        "hostname": "node01",
        "ip": "127.0.0.74",
        "peers": [{"node_id": "node01", "hostname": "node01", "ip": "127.0.0.74"}],
        "data_dir": str(tmp_path / "data"),
        "tls": {
            "ca_file": str(tmp_path / "ca.crt"),
            "cert_file": str(tmp_path / "node01.crt"),
            "key_file": str(tmp_path / "node01.key"),
        },
    }
    path = tmp_path / "cluster-config.json"
    path.write_text(json.dumps(cfg))
    result = runner.invoke(app, ["chainfire", "serve", "--config", str(path)])
    assert result.exit_code == EXIT_USAGE
    assert str(tmp_path / "ca.crt") in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"], "revisions"),
        (["--auto-compaction-retention", "soon"], "like 1h, 30m"),
        (["--auto-compaction-mode", "hourly"], "periodic"),
        (["--frontends", "many"], "from 0 to 64, or auto"),
        (["--frontends", "65"], "from 0 to 64, or auto"),
    ],
)
def test_bad_serve_flags_say_what_to_write(tmp_path: Path, flags: list[str], said: str) -> None:
    path = tmp_path / "cluster-config.json"
    path.write_text(
        json.dumps(
            {
                "node_id": "node01",
                "hostname": "node01",
                "ip": "127.0.0.74",
                "peers": [{"node_id": "node01", "hostname": "node01", "ip": "127.0.0.74"}],
                "data_dir": str(tmp_path / "data"),
            }
        )
    )
    result = runner.invoke(app, ["chainfire", "serve", "--config", str(path), *flags])
    assert result.exit_code == EXIT_USAGE
    assert said in " ".join(result.output.split())
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_one_process_per_data_dir(tmp_path: Path) -> None:
    fd = lock_data_dir(tmp_path)
    try:
        with pytest.raises(DataDirBusy, match=f"pid {os.getpid()}"):
            lock_data_dir(tmp_path)
    finally:
        os.close(fd)
    os.close(lock_data_dir(tmp_path))  # free again once the holder is gone
