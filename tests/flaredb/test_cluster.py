"""Three FlareDB nodes with the real Raft engine in one process (loopback TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from plasmacloud.common.config import FlareDBOptions
from plasmacloud.flaredb.server import FlareDBServer

from .cluster import Cluster, call, make_configs

pytestmark = pytest.mark.slow
HOSTS = ("127.0.0.21", "127.0.0.22", "127.0.0.23")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(make_configs(tmp_path, HOSTS), snapshot_threshold=50)
    try:
        await c.start_all()
        yield c
    finally:
        await c.stop_all()


def values(doc: dict) -> list:  # type: ignore[type-arg]
    (r,) = doc["results"]
    assert "error" not in r, r
    return list(r.get("values", []))


async def test_crud_at_every_level_from_every_node(cluster: Cluster) -> None:
    leader = await cluster.leader()
    follower = cluster.followers(leader)[0]
    status, doc, _ = await call(
        "POST",
        cluster.url(follower) + "/db/execute",
        [
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)",
            ["INSERT INTO t(v) VALUES(?)", "from-follower"],
        ],
    )
    assert status == 200 and doc["results"][1] == {"last_insert_id": 1, "rows_affected": 1}
    for i, node in enumerate(cluster.ids):
        status, doc, _ = await call(
            "POST", cluster.url(node) + "/db/execute", [["INSERT INTO t(v) VALUES(?)", node]]
        )
        assert status == 200 and doc["results"][0]["rows_affected"] == 1, doc
        for level in ("weak", "linearizable", "strong"):
            status, doc, _ = await call(
                "GET", cluster.url(node) + f"/db/query?q=SELECT+count(*)+FROM+t&level={level}"
            )
            assert status == 200 and values(doc) == [[i + 2]], (node, level, doc)
    status, doc, _ = await call(
        "POST",
        cluster.url(follower) + "/db/request?level=strong",
        [["UPDATE t SET v = v || '!' WHERE id = ?", 1], "SELECT v FROM t WHERE id = 1"],
    )
    assert doc["results"][1]["values"] == [["from-follower!"]]
    status, doc, _ = await call(
        "POST", cluster.url(follower) + "/db/execute", [["DELETE FROM t WHERE id = ?", 1]]
    )
    assert doc["results"][0]["rows_affected"] == 1

    # ?redirect: a follower answers 301 to the leader's API instead of forwarding.
    status, _, headers = await call(
        "POST", cluster.url(follower) + "/db/execute?redirect", ["SELECT 1"], allow_redirects=False
    )
    assert status == 301 and headers["Location"] == cluster.url(leader) + "/db/execute?redirect"
    status, _, headers = await call(
        "GET", cluster.url(follower) + "/db/query?q=SELECT+1&redirect", allow_redirects=False
    )
    assert status == 301

    # A constraint violation inside a transaction leaves nothing behind on any node.
    status, doc, _ = await call(
        "POST",
        cluster.url(follower) + "/db/execute?transaction",
        [["INSERT INTO t(v) VALUES(?)", "tx-a"], ["INSERT INTO t(v) VALUES(?)", leader]],
    )
    assert "UNIQUE constraint failed" in doc["results"][-1]["error"]
    await cluster.wait_all_applied()
    for node in cluster.ids:
        status, doc, _ = await call(
            "GET", cluster.url(node) + "/db/query?q=SELECT+v+FROM+t+ORDER+BY+v&level=none"
        )
        assert values(doc) == [[n] for n in sorted(cluster.ids)], node

    status, doc, _ = await call("GET", cluster.url(follower) + "/nodes?ver=2")
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert set(nodes) == set(cluster.ids)
    assert all(n["reachable"] and n["voter"] for n in nodes.values())
    assert [n for n in nodes if nodes[n]["leader"]] == [leader]
    status, doc, _ = await call("GET", cluster.url(follower) + "/status")
    assert doc["store"]["leader"]["node_id"] == leader
    assert doc["store"]["raft"]["state"] == "Follower"
    status, text, _ = await call("GET", cluster.url(follower) + "/metrics")
    # The engine's metrics share the node's registry.
    assert "raft_is_leader 0.0" in text and "raft_apply_duration_seconds_count" in text
    assert "flaredb_statements_total" in text and "flaredb_db_size_bytes" in text


async def test_replicas_identical_after_mixed_workload(cluster: Cluster) -> None:
    await cluster.leader()
    ids = cluster.ids
    await call(
        "POST",
        cluster.url(ids[0]) + "/db/execute",
        [
            "CREATE TABLE m (id INTEGER PRIMARY KEY, v TEXT, r INTEGER DEFAULT (random()), "
            "b BLOB, ts TEXT, j REAL)",
            "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT, r)",
            "CREATE TRIGGER m_ins AFTER INSERT ON m BEGIN "
            "INSERT INTO audit(what, r) VALUES (new.v, random()); END",
        ],
    )

    async def writer(node: str, n: int) -> None:
        for k in range(n):
            await call(
                "POST",
                cluster.url(node) + "/db/execute",
                [
                    [
                        "INSERT INTO m(v, b, ts, j) "
                        "VALUES(?, randomblob(8), CURRENT_TIMESTAMP, julianday('now'))",
                        f"{node}-{k}",
                    ],
                    "UPDATE m SET r = random() WHERE id % 5 = 0",
                ],
            )

    await asyncio.gather(*(writer(n, 15) for n in ids))
    await call(
        "POST",
        cluster.url(ids[1]) + "/db/execute?transaction",
        [
            "DELETE FROM m WHERE id % 7 = 0",
            "INSERT INTO m(v) SELECT v || '-copy' FROM m WHERE id < 5",
        ],
    )
    await cluster.wait_all_applied()
    dumps = cluster.dumps()
    assert dumps[ids[0]] == dumps[ids[1]] == dumps[ids[2]]
    assert sum(1 for line in dumps[ids[0]] if line.startswith('INSERT INTO "m"')) > 40
    for node in ids:
        status, doc, _ = await call(
            "GET", cluster.url(node) + "/db/query?q=PRAGMA+integrity_check&level=none"
        )
        assert status == 200 and values(doc) == [["ok"]], node


async def test_leader_stop_new_leader_then_full_restart(cluster: Cluster) -> None:
    old = await cluster.leader()
    follower = cluster.followers(old)[0]
    await call("POST", cluster.url(follower) + "/db/execute", ["CREATE TABLE k (v TEXT)"])
    for k in range(5):
        status, _, _ = await call(
            "POST", cluster.url(old) + "/db/execute", [["INSERT INTO k VALUES(?)", f"a{k}"]]
        )
        assert status == 200
    await cluster.stop(old)
    new = await cluster.leader()
    assert new != old
    for node in cluster.servers:
        status, doc, _ = await call(
            "POST", cluster.url(node) + "/db/execute", [["INSERT INTO k VALUES(?)", node]]
        )
        assert status == 200 and doc["results"][0]["rows_affected"] == 1, doc
    status, doc, _ = await call(
        "GET", cluster.url(new) + "/db/query?q=SELECT+count(*)+FROM+k&level=linearizable"
    )
    assert values(doc) == [[7]]
    # Full restart: every acknowledged row is back.
    await cluster.stop_all()
    await cluster.start_all()
    await cluster.leader()
    for node in cluster.ids:
        status, doc, _ = await call(
            "GET", cluster.url(node) + "/db/query?q=SELECT+count(*)+FROM+k&level=linearizable"
        )
        assert status == 200 and values(doc) == [[7]], (node, doc)


async def test_lagging_follower_catches_up_from_snapshot(cluster: Cluster) -> None:
    leader = await cluster.leader()
    lagging = cluster.followers(leader)[0]
    await call("POST", cluster.url(leader) + "/db/execute", ["CREATE TABLE s (v INTEGER)"])
    await cluster.stop(lagging)
    # Many entries (> snapshot_threshold) so the leader compacts past what `lagging` has.
    await asyncio.gather(
        *(
            call("POST", cluster.url(leader) + "/db/execute", [["INSERT INTO s VALUES(?)", k]])
            for k in range(150)
        )
    )
    raft_status = cluster.servers[leader].raft.status()
    assert raft_status.snapshot_index > 1, raft_status
    await cluster.start(lagging)
    await cluster.wait_all_applied()
    _, doc, _ = await call(
        "GET", cluster.url(lagging) + "/db/query?q=SELECT+count(*),sum(v)+FROM+s&level=none"
    )
    assert values(doc) == [[150, sum(range(150))]]
    dumps = cluster.dumps()
    assert dumps[leader] == dumps[lagging]


async def test_garbage_on_the_raft_port_changes_nothing(cluster: Cluster) -> None:
    leader = await cluster.leader()
    cfg = next(c for c in cluster.configs if c.node_id == leader)
    for payload in (
        os.urandom(4096),
        b"\x00" * 64,
        b"GET / HTTP/1.1\r\n\r\n",
        b"\xff\xff\xff\xff" + os.urandom(32),
    ):
        with socket.create_connection((str(cfg.ip), cfg.ports.flaredb_raft), timeout=2) as s:
            s.sendall(payload)
    await asyncio.sleep(0.3)
    assert await cluster.leader() == leader
    status, doc, _ = await call("POST", cluster.url(leader) + "/db/execute", ["CREATE TABLE g (x)"])
    assert status == 200 and doc["results"] == [{}]


async def test_dropping_every_listed_table_single_quoted_leaves_the_cluster_writable(
    cluster: Cluster,
) -> None:
    """An upstream client's teardown: every table sqlite_master lists, single-quoted. Our
    bookkeeping's DROP is refused for that statement; every node goes on applying."""
    leader = await cluster.leader()
    url = cluster.url(leader)
    status, _, _ = await call("POST", url + "/db/execute", ["CREATE TABLE a (x)"])
    assert status == 200
    status, doc, _ = await call(
        "GET", url + "/db/query?q=SELECT+name+FROM+sqlite_master+WHERE+type='table'"
    )
    names = [row[0] for row in values(doc)]
    assert "a" in names
    status, doc, _ = await call("POST", url + "/db/execute", [f"DROP TABLE '{n}'" for n in names])
    assert status == 200
    outcome = dict(zip(names, doc["results"], strict=True))
    assert "error" not in outcome["a"], outcome
    refused = [n for n, r in outcome.items() if "error" in r]
    assert all("reserved for FlareDB's own bookkeeping" in outcome[n]["error"] for n in refused)
    for node in cluster.ids:
        status, doc, _ = await call(
            "POST", cluster.url(node) + "/db/execute", [f"CREATE TABLE after_{node} (x)"]
        )
        assert status == 200 and "error" not in doc["results"][0], doc


async def test_a_node_whose_apply_raises_stops_loudly_and_the_others_go_on(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = await cluster.leader()
    broken = cluster.followers(leader)[0]
    server = cluster.servers[broken]

    def bug(*_: object) -> None:
        raise RuntimeError("simulated bug in the state machine")

    monkeypatch.setattr(server.store, "_run_entry", bug)
    status, doc, _ = await call("POST", cluster.url(leader) + "/db/execute", ["CREATE TABLE t (x)"])
    assert status == 200 and doc["results"] == [{}]
    for _ in range(100):
        if server.store.failure is not None and server.raft._stopped:
            break
        await asyncio.sleep(0.05)
    assert server.store.failure is not None and "simulated bug" in server.store.failure
    assert server.raft._stopped
    async with aiohttp.ClientSession() as s:
        async with s.get(cluster.url(broken) + "/readyz") as resp:
            assert resp.status == 503 and "store failed" in await resp.text()
        async with s.get(cluster.url(broken) + "/metrics") as resp:
            assert "flaredb_apply_failed 1.0" in await resp.text()
    # The other two still make a majority and keep writing.
    status, doc, _ = await call(
        "POST", cluster.url(leader) + "/db/execute", ["INSERT INTO t VALUES (1)"]
    )
    assert status == 200 and doc["results"] == [{"last_insert_id": 1, "rows_affected": 1}]


async def test_remove_takes_a_node_out_as_rqlite_does(cluster: Cluster) -> None:
    """DELETE /remove {"id": ...} on any node commits the change; /nodes lists the rest,
    and the two left still take writes (their quorum is both)."""
    leader = await cluster.leader()
    asker, gone = cluster.followers(leader)
    status, doc, _ = await call("DELETE", cluster.url(asker) + "/remove", {"id": "nobody"})
    assert status == 404 and "not a member" in doc["error"]
    status, doc, _ = await call("DELETE", cluster.url(asker) + "/remove", {"name": gone})
    assert status == 400 and '{"id": "node03"}' in doc["error"]
    status, _, _ = await call("DELETE", cluster.url(asker) + "/remove", {"id": gone})
    assert status == 200
    for node in (leader, asker):
        status, doc, _ = await call("GET", cluster.url(node) + "/nodes?ver=2")
        assert status == 200 and sorted(n["id"] for n in doc["nodes"]) == sorted([leader, asker])
    status, doc, _ = await call(
        "POST", cluster.url(asker) + "/db/execute", ["CREATE TABLE after_remove(x)"]
    )
    assert status == 200 and "error" not in doc["results"][0], doc
    # the removed node never sees its removal committed, so it asks the others and learns
    # it (then `plasma flaredb serve` stops, as a removed etcd member does)
    reason = await asyncio.wait_for(cluster.servers[gone].wait_removed(), timeout=30)
    assert gone in reason and "without" in reason


def free_pages(server: FlareDBServer) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{server.store.path}?mode=ro", uri=True)) as db:
        return int(db.execute("PRAGMA freelist_count").fetchone()[0])


async def fill_then_empty(cluster: Cluster) -> None:
    """A table that was about a megabyte, emptied: its pages stay in the file, free."""
    leader = await cluster.leader()
    url = cluster.url(leader) + "/db/execute"
    status, doc, _ = await call("POST", url, ["CREATE TABLE big (id INTEGER PRIMARY KEY, b)"])
    assert status == 200, doc
    rows = [["INSERT INTO big(b) VALUES(zeroblob(?))", 4000] for _ in range(250)]
    assert (await call("POST", url, rows))[0] == 200
    assert (await call("POST", url, ["DELETE FROM big"]))[0] == 200
    await cluster.wait_all_applied()


async def test_deleted_rows_keep_their_pages_without_scheduled_vacuum(cluster: Cluster) -> None:
    await fill_then_empty(cluster)
    assert all(free_pages(s) > 200 for s in cluster.servers.values())


async def test_scheduled_vacuum_gives_every_replica_its_free_pages_back(tmp_path: Path) -> None:
    vacuum = FlareDBOptions(auto_vacuum_interval="300ms")
    configs = [c.model_copy(update={"flaredb": vacuum}) for c in make_configs(tmp_path, HOSTS)]
    cluster = Cluster(configs)
    try:
        await cluster.start_all()
        await fill_then_empty(cluster)
        deadline = asyncio.get_running_loop().time() + 30
        while any(free_pages(s) for s in cluster.servers.values()):
            assert asyncio.get_running_loop().time() < deadline, [
                free_pages(s) for s in cluster.servers.values()
            ]
            await asyncio.sleep(0.2)
        # the VACUUM went through the log: every replica holds the same rows after it
        await cluster.wait_all_applied()
        assert len(set(map(tuple, cluster.dumps().values()))) == 1
    finally:
        await cluster.stop_all()
