"""`etcdctl move-leader` against Chainfire, answered as etcd 3.4 answers it: leadership
moves to the named member; a member id that is not in the cluster is a bad transferee,
and only the leader takes the request."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import grpc
import pytest

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.lab.control import Lab

from .conftest import etcdctl_env

pytestmark = pytest.mark.slow


def etcdctl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["etcdctl", *args], env=etcdctl_env(lab), capture_output=True, text=True, timeout=30
    )


def statuses(lab: Lab) -> list[dict[str, object]]:
    done = etcdctl(lab, "endpoint", "status", "-w", "json")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def leader_and_followers(lab: Lab) -> tuple[int, list[int]]:
    status = statuses(lab)
    leader = int(status[0]["Status"]["leader"])  # type: ignore[index]
    members = [int(s["Status"]["header"]["member_id"]) for s in status]  # type: ignore[index]
    return leader, [m for m in members if m != leader]


def test_move_leader_hands_leadership_to_the_named_member(fresh_lab: Lab) -> None:
    leader, followers = leader_and_followers(fresh_lab)
    target = followers[0]
    done = etcdctl(fresh_lab, "move-leader", f"{target:x}")
    assert done.returncode == 0, done.stderr
    assert f"Leadership transferred from {leader:x} to {target:x}" in done.stdout
    for _ in range(20):  # every member learns the new leader within heartbeats
        if {int(s["Status"]["leader"]) for s in statuses(fresh_lab)} == {target}:  # type: ignore[index]
            break
        time.sleep(0.1)
    assert {int(s["Status"]["leader"]) for s in statuses(fresh_lab)} == {target}  # type: ignore[index]
    assert etcdctl(fresh_lab, "put", "after-move", "v").returncode == 0

    bad = etcdctl(fresh_lab, "move-leader", "abcdef")
    assert bad.returncode != 0 and "bad leader transferee" in bad.stderr


async def _move_on(lab: Lab, node: int, target: int) -> grpc.StatusCode:
    cfg = lab.configs()[node]
    async with dial(client_target(cfg), lab.operator_tls) as ch:
        try:
            await rpc_pb2_grpc.MaintenanceStub(ch).MoveLeader(
                rpc_pb2.MoveLeaderRequest(targetID=target), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            assert exc.details() == "etcdserver: not leader"
            return exc.code()
    return grpc.StatusCode.OK


def test_a_follower_answers_not_leader(fresh_lab: Lab) -> None:
    _leader, followers = leader_and_followers(fresh_lab)
    status = statuses(fresh_lab)
    ids = [int(s["Status"]["header"]["member_id"]) for s in status]  # type: ignore[index]
    follower_index = ids.index(followers[0])
    code = asyncio.run(_move_on(fresh_lab, follower_index, followers[1]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
