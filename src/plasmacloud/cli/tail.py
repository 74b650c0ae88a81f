"""Printing the end of a log file, optionally following it like ``tail -f``."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def print_tail(path: Path, lines: int, follow: bool) -> None:
    """Print the last ``lines`` lines of ``path``; with ``follow``, keep printing what is
    appended until interrupted."""
    with path.open("r", errors="replace") as fh:
        for line in fh.readlines()[-lines:]:
            typer.echo(line, nl=False)
        while follow:
            line = fh.readline()
            if line:
                typer.echo(line, nl=False)
            else:
                time.sleep(0.2)
