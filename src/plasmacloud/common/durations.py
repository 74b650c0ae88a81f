"""Durations as people and Go programs write them: ``500ms``, ``2s``, ``1m``, ``90``."""

from __future__ import annotations

import re

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)?$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from a Go-style duration ("2s", "500ms", "1m") or a bare number of seconds
    (rqlite's ``?timeout=``, ``plasma lab chaos --duration``); ValueError otherwise."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"invalid duration {text!r} (use e.g. 500ms, 2s, 1m)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]
