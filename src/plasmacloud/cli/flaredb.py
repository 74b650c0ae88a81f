"""`plasma flaredb ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="FlareDB: replicated SQL with an rqlite-compatible API.", no_args_is_help=True)
