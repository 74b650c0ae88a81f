"""Report rendering and exit codes from hand-made results."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from rich.console import Console

from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK
from plasmacloud.validate.checks import CheckResult, NodeResult
from plasmacloud.validate.report import exit_code, report_json, report_junit, report_table


def _results(ok2: bool) -> list[CheckResult]:
    return [
        CheckResult(
            "a", "first", [NodeResult("node01", True, "fine"), NodeResult("node02", ok2, "x")]
        ),
        CheckResult(
            "b", "second", [NodeResult("node01", True, "ok"), NodeResult("node02", True, "y")]
        ),
    ]


def test_exit_code_and_json_follow_every_node_result() -> None:
    assert exit_code(_results(True)) == EXIT_OK
    assert exit_code(_results(False)) == EXIT_FAILURE
    assert exit_code([]) == EXIT_FAILURE, "zero checks must not count as a pass"
    doc = report_json(_results(False))
    assert doc["ok"] is False
    assert doc["checks"][0]["ok"] is False and doc["checks"][1]["ok"] is True
    assert doc["checks"][0]["nodes"][1] == {"node": "node02", "ok": False, "evidence": "x"}


def test_table_has_a_column_per_node_and_marks_failures() -> None:
    console = Console(width=120, record=True)
    console.print(report_table(_results(False)))
    text = console.export_text()
    assert "node01" in text and "node02" in text
    assert "FAIL x" in text and "PASS fine" in text


def test_junit_has_a_case_per_check_and_node_and_fails_the_red_ones() -> None:
    root = ET.fromstring(report_junit(_results(False)))
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    failed = [
        (tc.get("classname"), tc.get("name"))
        for tc in suite.iter("testcase")
        if tc.find("failure") is not None
    ]
    assert failed == [("a", "node02")]
