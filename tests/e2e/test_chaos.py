"""Chaos runs on real clusters: faults while recorded clients work, every property verified."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plasmacloud.chaos.history import Verdict, load_history
from plasmacloud.chaos.history_check import check_history
from plasmacloud.chaos.run import ChaosConfig, ChaosResult, run_chaos
from plasmacloud.cli import app
from plasmacloud.common.errors import EXIT_OK
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import NetnsNames, lab_objects, scratch_netns_spec
from plasmacloud.lab.services import CHAINFIRE, FLAREDB, ServiceSpec
from plasmacloud.lab.target import lab_target

from .conftest import READY_TIMEOUT_S, with_flags

pytestmark = pytest.mark.slow


def _assert_verified(result: ChaosResult, kinds: set[str]) -> None:
    assert result.problems == []
    bad = [v for v in result.verdicts if v.status != "ok"]
    assert not bad, f"seed {result.history.meta['seed']}, history {result.history_path}: {bad}"
    assert {f.kind for f in result.faults} >= kinds, result.faults
    for f in result.faults:
        assert f.ready is not None and f.recovery_s, f
        assert all(t is not None for t in f.recovery_s.values()), f
    ops = result.history.ops
    assert sum(op.outcome == "ok" and op.kind == "write" for op in ops) > 50
    assert sum(op.outcome == "ok" and op.kind == "read_set" for op in ops) >= 3
    assert result.history.events, "the watch streams delivered nothing"
    # the saved file re-checks to the same verdicts
    assert check_history(load_history(result.history_path)) == result.verdicts


def _config(duration_s: float, faults: tuple[str, ...], seed: int) -> ChaosConfig:
    # short quiet times and holds so several faults fit in a CI-sized run
    return ChaosConfig(duration_s, faults, seed, gap_s=(0.5, 1.0), hold_s=(1.5, 2.5))


@pytest.mark.parametrize("frontends", [0, 2], ids=["in-process", "frontends"])
async def test_chaos_on_processes_kill_restart_pause(
    lab_factory: Callable[[tuple[ServiceSpec, ...]], Lab], tmp_path: Path, frontends: int
) -> None:
    # with frontends, a killed or paused member's workers are in the path of every call
    chainfire = with_flags(CHAINFIRE, "--frontends", str(frontends))
    lab = lab_factory((chainfire, FLAREDB))
    # seed 7 injects pause, kill, restart in that order; the first two always fit in 30 s
    cfg = _config(30, ("kill", "restart", "pause"), seed=7)
    result = await run_chaos(lab_target(lab), cfg, tmp_path / "history.jsonl", say=lambda _m: None)
    _assert_verified(result, {"pause", "kill"})
    # both Chainfire's set and FlareDB's table were checked
    sets = {op.key for op in result.history.ops if op.kind == "read_set"}
    assert len(sets) == 2 and any(k.startswith("flaredb:") for k in sets)


@pytest.fixture
def netns_lab(tmp_path: Path) -> Iterator[Lab]:
    """A netns lab with every service (as `plasma lab up --backend netns` runs it)."""
    lab = Lab.open(tmp_path / "lab", scratch_netns_spec(), backend="netns")
    try:
        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        yield lab
    finally:
        lab.down()
    assert lab_objects(NetnsNames.for_lab(lab.layout.root)) == []


def test_chaos_cli_on_netns_with_partitions(netns_lab: Lab, tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    argv = ["lab", "chaos", "--dir", str(netns_lab.layout.root), "--duration", "30s"]
    # seed 11 injects partition, then kill
    argv += ["--faults", "partition,kill", "--seed", "11", "--history", str(history), "--json"]
    result = CliRunner().invoke(app, argv)
    doc = json.loads(result.stdout)
    assert result.exit_code == EXIT_OK, doc
    assert doc["ok"] and doc["problems"] == []
    assert [v["status"] for v in doc["verdicts"]] == ["ok", "ok", "ok"]
    assert {f["kind"] for f in doc["faults"]} >= {"partition", "kill"}
    for f in doc["faults"]:
        assert set(f["recovery_s"]) == {"chainfire", "flaredb"}
        assert all(t is not None for t in f["recovery_s"].values()), f
    saved = load_history(history)
    assert any(op.key.startswith("flaredb:") for op in saved.ops if op.kind == "read_set")
    assert check_history(saved) == [Verdict.model_validate(v) for v in doc["verdicts"]]
