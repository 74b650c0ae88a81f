"""Helpers shared by the provisioning tests."""

from __future__ import annotations

from typer.testing import CliRunner

from plasmacloud.cli import app

runner = CliRunner()


def run_plasma(*args: str) -> tuple[int, str]:
    """Run ``plasma ARGS`` in-process; (exit code, stdout+stderr)."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output
