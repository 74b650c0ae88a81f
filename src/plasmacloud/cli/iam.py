"""`plasma iam ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="IAM: users, policies, tokens.", no_args_is_help=True)
