"""`plasma chainfire ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Chainfire: the etcd-compatible coordination KV store.", no_args_is_help=True)
