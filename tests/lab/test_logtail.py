"""lab/logtail.py: the last lines of a log, then what is appended while following."""

from __future__ import annotations

import threading
from pathlib import Path

from plasmacloud.lab.logtail import tail_lines


def test_tail_lines_gives_the_last_lines_then_stops(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    assert list(tail_lines(log, 2, follow=False)) == ["line 8\n", "line 9\n"]


def test_following_yields_lines_appended_later(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old\n")
    lines = tail_lines(log, 5, follow=True, poll_s=0.01)
    assert next(lines) == "old\n"

    def append() -> None:
        with log.open("a") as fh:
            fh.write("new\n")

    writer = threading.Timer(0.05, append)
    writer.start()
    try:
        assert next(lines) == "new\n"  # waited for it: polling, not ending
    finally:
        writer.join()
        lines.close()
