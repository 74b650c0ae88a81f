"""Removed options answer with what replaced them, before anything starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.common.errors import EXIT_USAGE


@pytest.mark.parametrize("service", ["chainfire", "flaredb"])
def test_trusted_cn_is_a_usage_error_naming_certificate_identities(service: str) -> None:
    argv = [service, "serve", "--config", "/nonexistent.json", "--iam-url", "https://x:8443"]
    res = CliRunner().invoke(app, [*argv, "--trusted-cn", "operator"])
    assert res.exit_code == EXIT_USAGE, res.output
    said = " ".join(res.output.replace("│", " ").split())
    assert "--trusted-cn was removed" in said and "--certificate-only" in said
    # and it is not offered any more
    assert "--trusted-cn" not in CliRunner().invoke(app, [service, "serve", "--help"]).output
