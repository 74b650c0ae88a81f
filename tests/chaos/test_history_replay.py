"""`plasma lab chaos --replay FILE`: re-check a saved history from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from plasmacloud.chaos.history import History, Op, WatchEvent, WatchSpan, save_history
from plasmacloud.cli import app
from plasmacloud.cli.lab_chaos import parse_duration
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

runner = CliRunner()


def _history() -> History:
    ops = [
        Op(process=0, kind="write", key="/r/1", value="a", invoke=0.0, complete=1.0,
           outcome="ok", revision=2),
        Op(process=1, kind="read", key="/r/1", result="a", invoke=2.0, complete=3.0,
           outcome="ok"),
        Op(process=2, kind="add", key="/s", value="e1", invoke=0.0, complete=1.0,
           outcome="ok", revision=3),
        Op(process=2, kind="read_set", key="/s", elements=["e1"], invoke=2.0, complete=3.0,
           outcome="ok"),
    ]  # fmt: skip
    events = [
        WatchEvent(watcher=1, revision=2, key="/r/1", value="a", received=1.0),
        WatchEvent(watcher=1, revision=3, key="/s/e1", value="e1", received=1.0),
    ]
    return History(
        meta={"seed": 1}, ops=ops, events=events, spans=[WatchSpan(watcher=1, start=2, end=3)]
    )


def test_replay_of_a_good_history_passes(tmp_path: Path) -> None:
    path = tmp_path / "good.jsonl"
    save_history(path, _history())
    result = runner.invoke(app, ["lab", "chaos", "--replay", str(path), "--json"])
    assert result.exit_code == EXIT_OK, result.output
    doc = json.loads(result.output)
    assert [v["status"] for v in doc["verdicts"]] == ["ok", "ok", "ok"]


def test_replay_flags_a_planted_lost_write(tmp_path: Path) -> None:
    history = _history()
    # an acknowledged add that the later set read does not contain, and a watch stream
    # that skipped a revision
    history.ops.append(
        Op(process=3, kind="add", key="/s", value="lost", invoke=0.5, complete=1.5, outcome="ok")
    )
    history.spans[0] = WatchSpan(watcher=1, start=2, end=4)
    path = tmp_path / "planted.jsonl"
    save_history(path, history)
    result = runner.invoke(app, ["lab", "chaos", "--replay", str(path)])
    assert result.exit_code == EXIT_FAILURE, result.output
    flat = " ".join(result.output.split())
    assert "VIOLATED" in flat
    assert "lost" in flat


def test_replay_of_a_broken_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text("not json\n")
    result = runner.invoke(app, ["lab", "chaos", "--replay", str(path)])
    assert result.exit_code == EXIT_USAGE
    assert "broken.jsonl:1" in " ".join(result.output.split())


def test_parse_duration() -> None:
    assert parse_duration("60s") == 60.0
    assert parse_duration("2m") == 120.0
    assert parse_duration("45") == 45.0
    with pytest.raises(typer.BadParameter):
        parse_duration("soon")
