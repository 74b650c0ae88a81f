"""ClusterTarget: its ready wait and probe against nodes nobody runs (a scratch loopback
range with free ports, plain TCP), and the caller's own wait when one is given."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from plasmacloud.cluster.control import ClusterError
from plasmacloud.cluster.probe import ClusterView
from plasmacloud.cluster.services import CHAINFIRE, FLAREDB
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.lab.layout import LabLayout
from plasmacloud.lab.spec import scratch_spec


def idle_target(tmp_path: Path) -> ClusterTarget:
    spec = scratch_spec(tls=False)
    layout = LabLayout(tmp_path)
    configs = [layout.node_config(spec, n) for n in spec.node_ids]
    return ClusterTarget("test", configs, layout.operator_tls(spec), (CHAINFIRE, FLAREDB))


async def test_probe_and_ready_wait_say_what_is_wrong_with_a_cluster_that_is_not_there(
    tmp_path: Path,
) -> None:
    target = idle_target(tmp_path)
    assert target.node_ids == ["node01", "node02", "node03"] and target.ssl_ctx is None
    assert target.runs("flaredb") and not target.runs("iam")
    view = await target.probe()
    assert [n.node_id for n in view.nodes] == target.node_ids and not view.ready
    assert all("cannot connect" in n.health["chainfire"][1] for n in view.nodes)
    with pytest.raises(ClusterError, match=r"not ready 1s: node01: unhealthy \(chainfire"):
        await target.wait_ready(1.0)


async def test_a_ready_wait_of_its_own_is_used_instead_of_polling(tmp_path: Path) -> None:
    asked: list[float] = []
    answer = ClusterView([], expected_members=3)

    async def own(timeout: float) -> ClusterView:
        asked.append(timeout)
        return answer

    target = dataclasses.replace(idle_target(tmp_path), ready_wait=own)
    assert await target.wait_ready(7.0) is answer
    assert asked == [7.0]
