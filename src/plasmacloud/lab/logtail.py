"""The end of a node's log file, optionally followed like ``tail -f``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path


def tail_lines(path: Path, lines: int, follow: bool, poll_s: float = 0.2) -> Iterator[str]:
    """The last ``lines`` lines of ``path`` (each with its newline); with ``follow``, then
    every line appended, polling every ``poll_s`` s, until the caller stops iterating."""
    with path.open("r", errors="replace") as fh:
        yield from fh.readlines()[-lines:]
        while follow:
            line = fh.readline()
            if line:
                yield line
            else:
                time.sleep(poll_s)
