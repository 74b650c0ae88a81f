"""Election, leader crash, whole-cluster restart and follower catch-up on real processes."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import CHAINFIRE
from plasmacloud.lab.spec import scratch_spec
from plasmacloud.lab.workload import put_acknowledged

from .conftest import READY_TIMEOUT_S

pytestmark = pytest.mark.slow


def _channels(lab: Lab, nodes: list[str]) -> list[grpc.aio.Channel]:
    return [dial(client_target(c), lab.operator_tls) for c in lab.configs(nodes)]


async def _read_all(lab: Lab, node: str, prefix: bytes, serializable: bool) -> dict[bytes, bytes]:
    (ch,) = _channels(lab, [node])
    async with ch:
        resp = await rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(
                key=prefix,
                range_end=prefix[:-1] + bytes([prefix[-1] + 1]),
                serializable=serializable,
            ),
            timeout=10,
        )
    return {kv.key: kv.value for kv in resp.kvs}


async def _eventually_has(
    lab: Lab, node: str, prefix: bytes, want: dict[bytes, bytes], timeout: float = 60.0
) -> dict[bytes, bytes]:
    """Poll a node's local (serializable) view until it holds every key of ``want``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await _read_all(lab, node, prefix, serializable=True)
        if all(got.get(k) == v for k, v in want.items()) or loop.time() > deadline:
            return got
        await asyncio.sleep(0.5)


async def test_election_one_leader_agreed_by_all(fresh_lab: Lab) -> None:
    view = await fresh_lab.wait_ready(timeout=READY_TIMEOUT_S)
    assert view.leader_node in fresh_lab.spec.node_ids
    assert sum(1 for n in view.nodes if n.member_id == view.leader_id) == 1
    assert len({n.raft_term for n in view.nodes}) == 1


async def test_kill_leader_new_leader_and_writes_continue(fresh_lab: Lab) -> None:
    view = await fresh_lab.wait_ready(timeout=READY_TIMEOUT_S)
    old = view.leader_node
    assert old is not None
    before = await put_acknowledged(_channels(fresh_lab, fresh_lab.spec.node_ids), 50, b"/a/")
    assert len(before) == 50

    fresh_lab.backend.kill_node(old, signal.SIGKILL)
    rest = [n for n in fresh_lab.spec.node_ids if n != old]
    after_view = await fresh_lab.wait_ready(timeout=READY_TIMEOUT_S, nodes=rest)
    assert after_view.leader_node in rest
    assert all((n.raft_term or 0) > (view.nodes[0].raft_term or 0) for n in after_view.nodes)

    after = await put_acknowledged(_channels(fresh_lab, rest), 50, b"/b/")
    assert len(after) == 50, "writes must continue with two of three nodes"
    assert await _read_all(fresh_lab, rest[0], b"/a/", serializable=False) == before

    fresh_lab.backend.start_node(old)
    await fresh_lab.wait_ready(timeout=READY_TIMEOUT_S)
    assert await _eventually_has(fresh_lab, old, b"/b/", after) == after


async def test_all_three_killed_and_restarted_keep_every_acknowledged_key(fresh_lab: Lab) -> None:
    acked = await put_acknowledged(
        _channels(fresh_lab, fresh_lab.spec.node_ids), 300, b"/r/", concurrency=32
    )
    assert len(acked) == 300
    for node in fresh_lab.spec.node_ids:  # a crash of everything: no graceful shutdown
        fresh_lab.backend.kill_node(node, signal.SIGKILL)
    assert not fresh_lab.running()
    fresh_lab.up()
    await fresh_lab.wait_ready(timeout=READY_TIMEOUT_S)
    for node in fresh_lab.spec.node_ids:
        assert await _read_all(fresh_lab, node, b"/r/", serializable=False) == acked


# Chainfire compacts its log every --snapshot-threshold applied entries; a low one lets
# a stopped follower fall behind the leader's compacted log with few writes.
SNAPSHOT_THRESHOLD = 300
CATCH_UP_WRITES = 1_000
SMALL_SNAPSHOTS = replace(
    CHAINFIRE,
    argv=lambda path, cfg, plasma: [
        *CHAINFIRE.argv(path, cfg, plasma),
        "--snapshot-threshold",
        str(SNAPSHOT_THRESHOLD),
    ],
)


async def test_stopped_follower_catches_up_after_log_compaction(tmp_path: Path) -> None:
    fresh_lab = Lab.open(tmp_path / "lab", scratch_spec(), services=(SMALL_SNAPSHOTS,))
    try:
        fresh_lab.up()
        await _catch_up_after_compaction(fresh_lab)
    finally:
        fresh_lab.down()


async def _catch_up_after_compaction(fresh_lab: Lab) -> None:
    view = await fresh_lab.wait_ready(timeout=READY_TIMEOUT_S)
    follower = next(n for n in fresh_lab.spec.node_ids if n != view.leader_node)
    rest = [n for n in fresh_lab.spec.node_ids if n != follower]
    fresh_lab.backend.stop_node(follower)

    acked = await put_acknowledged(
        _channels(fresh_lab, rest), CATCH_UP_WRITES, b"/c/", concurrency=64, duration_s=120
    )
    assert len(acked) == CATCH_UP_WRITES

    log = fresh_lab.layout.log_path(follower, "chainfire")
    restarted_at = len(log.read_text())
    fresh_lab.backend.start_node(follower)
    await fresh_lab.wait_ready(timeout=READY_TIMEOUT_S)
    assert await _eventually_has(fresh_lab, follower, b"/c/", acked, timeout=120) == acked
    # the point of the test: the entries it missed were gone from the leader's log
    # (the engine logs "installing snapshot N/T from the leader" when it receives one)
    assert "installing snapshot" in log.read_text()[restarted_at:], f"no snapshot in {log}"
