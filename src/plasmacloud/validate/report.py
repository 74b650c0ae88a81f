"""Validation reports: a check x node table for people, JSON for machines, an exit code."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rich.table import Table

from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK
from plasmacloud.common.files import write_atomic
from plasmacloud.validate.checks import CheckResult


def report_table(results: list[CheckResult], title: str = "Cluster validation") -> Table:
    """One row per check, one column per node; each cell is pass/fail plus the evidence."""
    nodes = sorted({r.node_id for c in results for r in c.results})
    table = Table(title=title, show_lines=True)
    table.add_column("check", style="bold")
    for node in nodes:
        table.add_column(node, overflow="fold")
    for check in results:
        by_node = {r.node_id: r for r in check.results}
        cells = []
        for node in nodes:
            r = by_node.get(node)
            if r is None:
                cells.append("[dim]-[/dim]")
            else:
                mark = "[green]PASS[/green]" if r.ok else "[red]FAIL[/red]"
                cells.append(f"{mark} {r.evidence}")
        status = "[green]✔[/green]" if check.ok else "[red]✘[/red]"
        head = f"{status} {check.check_id}\n[dim]{check.title} ({check.seconds:.1f}s)[/dim]"
        table.add_row(head, *cells)
    return table


def report_json(results: list[CheckResult]) -> dict[str, Any]:
    """The report as a JSON-ready document (``ok`` overall, per check and per node)."""
    return {
        "ok": all_ok(results),
        "checks": [
            {
                "id": c.check_id,
                "title": c.title,
                "ok": c.ok,
                "seconds": round(c.seconds, 3),
                "nodes": [
                    {"node": r.node_id, "ok": r.ok, "evidence": r.evidence} for r in c.results
                ],
            }
            for c in results
        ],
    }


# where a lab or a render tree keeps its validation reports (the dashboard lists them)
REPORTS_DIR = "reports"


def save_report(results: list[CheckResult], root: Path) -> Path:
    """Write :func:`report_json` to ``root/reports/validate-<UTC time>.json``; its path."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = root / REPORTS_DIR / f"validate-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(report_json(results), indent=2).encode())
    return path


def report_junit(results: list[CheckResult], suite: str = "plasmacloud-validate") -> str:
    """JUnit XML for CI dashboards: one test case per check and node, evidence as output."""
    cases = [(c, r) for c in results for r in c.results]
    failures = sum(1 for _c, r in cases if not r.ok)
    root = ET.Element("testsuites")
    ts = ET.SubElement(
        root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures), errors="0"
    )
    for check, r in cases:
        tc = ET.SubElement(
            ts,
            "testcase",
            classname=check.check_id,
            name=r.node_id,
            time=f"{check.seconds:.3f}",
        )
        if not r.ok:
            ET.SubElement(tc, "failure", message=f"{check.title}: {r.evidence}")
        ET.SubElement(tc, "system-out").text = r.evidence
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def all_ok(results: list[CheckResult]) -> bool:
    """True when there was at least one check and every one passed."""
    return bool(results) and all(c.ok for c in results)


def exit_code(results: list[CheckResult]) -> int:
    """``EXIT_OK`` when everything passed, ``EXIT_FAILURE`` otherwise."""
    return EXIT_OK if all_ok(results) else EXIT_FAILURE
