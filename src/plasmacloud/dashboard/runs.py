"""The runs page: chaos histories saved in a lab (``<dir>/chaos/*.jsonl``, re-checked here
for their verdicts: linearizability of the registers, lost or phantom set elements, watch
streams) and the validation reports ``plasma validate`` and ``plasma lab validate`` save
(``<dir>/reports/*.json``), newest first."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from plasmacloud.chaos.history import load_history
from plasmacloud.chaos.history_check import check_history, passed
from plasmacloud.validate.report import REPORTS_DIR

CHAOS_DIR = "chaos"  # where `plasma lab chaos` saves its histories in a lab
# what /runs/<kind>/<name> may serve: plain file names (no separator leaves the directory)
SAVED = {
    CHAOS_DIR: (CHAOS_DIR, re.compile(r"[\w.-]+\.jsonl")),
    REPORTS_DIR: (REPORTS_DIR, re.compile(r"[\w.-]+\.json")),
}


def _when(path: Path) -> str:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(timespec="seconds")


def _link(kind: str, path: Path) -> str:
    return f"/runs/{kind}/{path.name}"


def _newest_first(directory: Path, pattern: str) -> list[Path]:
    return sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)


def chaos_run(path: Path) -> dict[str, Any]:
    """One saved history: its meta (seed, faults, what was injected), its verdicts, and
    where the dashboard serves the file (``link``)."""
    doc: dict[str, Any] = {"file": str(path), "at": _when(path), "link": _link(CHAOS_DIR, path)}
    try:
        history = load_history(path)
    except (OSError, ValueError) as exc:
        return doc | {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    verdicts = check_history(history)
    return doc | {
        "ok": passed(verdicts),
        "meta": history.meta,
        "ops": len(history.ops),
        "verdicts": [v.model_dump(mode="json") for v in verdicts],
    }


def validation_report(path: Path) -> dict[str, Any]:
    """One saved report: overall ``ok``, the checks that failed, each check's result per
    node (``results``), where it is served."""
    doc: dict[str, Any] = {"file": str(path), "at": _when(path), "link": _link(REPORTS_DIR, path)}
    try:
        report = json.loads(path.read_text())
        checks = report["checks"]
        return doc | {
            "ok": bool(report["ok"]),
            "checks": len(checks),
            "failed": [c["id"] for c in checks if not c["ok"]],
            "results": [
                {"id": c["id"], "ok": c["ok"], "nodes": {n["node"]: n for n in c["nodes"]}}
                for c in checks
            ],
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return doc | {"ok": False, "error": f"not a validation report ({exc})"}


class Runs:
    """The runs under a directory; a history is re-checked only when its file changed
    (checking a long history takes a while, the page asks every few seconds)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._checked: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}

    async def _chaos(self, path: Path) -> dict[str, Any]:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._checked.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, await asyncio.to_thread(chaos_run, path))
            self._checked[path] = cached
        return cached[1]

    def saved_file(self, kind: str, name: str) -> Path | None:
        """The saved history or report ``name`` of ``kind`` (a key of :data:`SAVED`),
        if there is one."""
        if self.root is None or kind not in SAVED:
            return None
        directory, pattern = SAVED[kind]
        path = self.root / directory / name
        return path if pattern.fullmatch(name) and path.is_file() else None

    async def get(self) -> dict[str, Any]:
        if self.root is None:
            return {"dir": None, "chaos": [], "validation": []}
        chaos = [await self._chaos(p) for p in _newest_first(self.root / CHAOS_DIR, "*.jsonl")]
        reports = _newest_first(self.root / REPORTS_DIR, "*.json")
        return {
            "dir": str(self.root),
            "chaos": chaos,
            "validation": [validation_report(p) for p in reports],
        }
