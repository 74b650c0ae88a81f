"""Durations as people and Go programs write them: ``500ms``, ``2s``, ``1h30m``, ``90``."""

from __future__ import annotations

import re

_UNIT = r"(?:ns|us|µs|ms|s|m|h)"
_DURATION_RE = re.compile(rf"^(?:\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?{_UNIT})+)$")
_PART_RE = re.compile(rf"(\d+(?:\.\d+)?)({_UNIT})?")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from a Go-style duration ("2s", "500ms", "1h30m") or a bare number of
    seconds (rqlite's ``?timeout=``, ``plasma lab chaos --duration``, etcd's compaction
    retention); ValueError otherwise."""
    bare = text.strip()
    if not _DURATION_RE.match(bare):
        raise ValueError(f"invalid duration {text!r} (use e.g. 500ms, 2s, 1m)")
    return sum(float(n) * _UNITS[u or "s"] for n, u in _PART_RE.findall(bare))
