"""`plasma lab ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Rehearse a cluster on this machine: up, status, env, validate, down.", no_args_is_help=True)
