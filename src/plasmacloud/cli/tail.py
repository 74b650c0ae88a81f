"""Printing the end of a log file, optionally following it like ``tail -f``."""

from __future__ import annotations

from pathlib import Path

import typer


def print_tail(path: Path, lines: int, follow: bool) -> None:
    """Print the last ``lines`` lines of ``path``; with ``follow``, keep printing what is
    appended until interrupted."""
    from plasmacloud.lab.logtail import tail_lines

    for line in tail_lines(path, lines, follow):
        typer.echo(line, nl=False)
