"""Provisioning commands: init, render, pki, preflight, netboot, provision, agent, deploy."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the provisioning commands to the top-level ``plasma`` app."""
