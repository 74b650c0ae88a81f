"""Growing a FlareDB cluster as rqlite's operators do: a node started with ``bootstrap:
false`` asks its peers to add it (``-join``), ``POST /join`` adds one on any node, and the
new member catches up by snapshot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from plasmacloud.common.config import NodeConfig

from .cluster import Cluster, call, make_configs

pytestmark = pytest.mark.slow
HOSTS = ("127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24")


def write_and_load(config: NodeConfig, path: Path) -> NodeConfig:
    """The config as a service started from its file sees it (it re-reads that file)."""
    config.dump(path)
    return NodeConfig.load(path)


@pytest.fixture
async def grown(tmp_path: Path) -> AsyncIterator[tuple[Cluster, list[NodeConfig], list[Path]]]:
    """node01-03 running from files that list only them (the 4-node configs are returned
    for the test to render when it adds node04)."""
    four = make_configs(tmp_path, HOSTS)
    paths = [tmp_path / f"{c.node_id}.json" for c in four]
    three = [
        write_and_load(c.model_copy(update={"peers": c.peers[:3]}), p)
        for c, p in zip(four[:3], paths, strict=False)
    ]
    cluster = Cluster(three, snapshot_threshold=50)
    try:
        await cluster.start_all()
        yield cluster, four, paths
    finally:
        await cluster.stop_all()


async def wait_members(cluster: Cluster, expected: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = {n: {m.node_id for m in s.raft.status().members} for n, s in cluster.servers.items()}
        if all(m == expected for m in seen.values()):
            return
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.1)


async def test_a_node_started_with_bootstrap_false_joins_and_catches_up_by_snapshot(
    grown: tuple[Cluster, list[NodeConfig], list[Path]],
) -> None:
    cluster, four, paths = grown
    leader = await cluster.leader()
    await call("POST", cluster.url(leader) + "/db/execute", ["CREATE TABLE s (v INTEGER)"])
    for k in range(150):  # past the snapshot threshold: the log before it is compacted
        await call("POST", cluster.url(leader) + "/db/execute", [["INSERT INTO s VALUES(?)", k]])
    assert cluster.servers[leader].raft.status().snapshot_index > 1

    # add-node re-renders every member's file with node04; the running ones re-read it
    for config, path in zip(four[:3], paths, strict=False):
        config.dump(path)
    joiner = write_and_load(four[3].model_copy(update={"bootstrap": False}), paths[3])
    cluster.configs.append(joiner)
    await cluster.start("node04")
    await wait_members(cluster, {"node01", "node02", "node03", "node04"})
    await cluster.wait_all_applied()
    _, doc, _ = await call(
        "GET", cluster.url("node04") + "/db/query?q=SELECT+count(*),sum(v)+FROM+s&level=none"
    )
    assert doc["results"][0]["values"] == [[150, sum(range(150))]]
    assert cluster.dumps()["node04"] == cluster.dumps()[leader]

    # every member names node04's API (from its re-read file), and node04 takes writes
    status, doc, _ = await call("GET", cluster.url(leader) + "/nodes?ver=2")
    by_id = {n["id"]: n for n in doc["nodes"]}
    assert status == 200 and sorted(by_id) == ["node01", "node02", "node03", "node04"]
    assert by_id["node04"]["api_addr"] == cluster.url("node04")
    assert by_id["node04"]["reachable"] is True
    status, doc, _ = await call(
        "POST", cluster.url("node04") + "/db/execute", [["INSERT INTO s VALUES(?)", -1]]
    )
    assert status == 200 and "error" not in doc["results"][0], doc


async def test_join_on_any_node_is_idempotent_and_refuses_a_second_address(
    grown: tuple[Cluster, list[NodeConfig], list[Path]],
) -> None:
    cluster, four, _ = grown
    leader = await cluster.leader()
    follower = cluster.followers(leader)[0]
    url = cluster.url(follower) + "/join"
    status, doc, _ = await call("POST", url, {"addr": "node04:1"})
    assert status == 400 and '"id": "node04"' in doc["error"]
    status, doc, _ = await call("POST", url, {"id": "node04", "addr": "x:1", "voter": False})
    assert status == 400 and "non-voters" in doc["error"]

    # a follower takes it (the leader commits the change); asking again changes nothing
    addr = f"node04:{four[3].ports.flaredb_raft}"
    for _ in range(2):
        status, _, _ = await call("POST", url, {"id": "node04", "addr": addr, "voter": True})
        assert status == 200
    await wait_members(cluster, {"node01", "node02", "node03", "node04"})
    status, doc, _ = await call("POST", url, {"id": "node04", "addr": "node04:1"})
    assert status == 409 and "remove it" in doc["error"]
    # node04 is not running: three of four still make a quorum, and /remove undoes it
    status, _, _ = await call("DELETE", cluster.url(leader) + "/remove", {"id": "node04"})
    assert status == 200
    await wait_members(cluster, {"node01", "node02", "node03"})
