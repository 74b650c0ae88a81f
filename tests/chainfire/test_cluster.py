"""Three real `plasma chainfire serve` processes with mTLS: the engine and etcd API together."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasmacloud.chainfire.client import ChainfireClient
from plasmacloud.chainfire.node import member_id

from .cluster import Cluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start_all()
        c.wait_healthy()
        yield c
    finally:
        c.stop_all()


async def leader_of(client: ChainfireClient, endpoints: list[str], dead: str = "") -> str:
    """The leader's node id once every endpoint reports the same live one."""
    ids = {member_id(f"node0{i}"): f"node0{i}" for i in (1, 2, 3)}
    leaders: set[int] = set()
    for _ in range(100):
        leaders = {(await client.status(ep)).leader for ep in endpoints}
        if len(leaders) == 1 and ids.get(next(iter(leaders)), dead) != dead:
            return ids[leaders.pop()]
        await asyncio.sleep(0.1)
    raise AssertionError(f"members disagree on the leader: {leaders}")


async def test_cluster_survives_leader_kill_and_full_restart(cluster: Cluster) -> None:
    tls = cluster.operator_tls
    async with ChainfireClient(cluster.endpoints(), tls) as client:
        members = await client.member_list()
        assert sorted(m.name for m in members) == ["node01", "node02", "node03"]
        assert all(m.clientURLs[0].startswith("https://") for m in members)
        acked: dict[str, str] = {}
        # a write through each member (followers forward), read back through the others
        for i, node_id in enumerate(cluster.configs):
            async with ChainfireClient([cluster.endpoint(node_id)], tls) as one:
                await one.put(f"k{i}", f"v{i}")
                acked[f"k{i}"] = f"v{i}"
        for node_id in cluster.configs:
            async with ChainfireClient([cluster.endpoint(node_id)], tls) as one:
                kvs = await one.range_prefix("k")
                assert {kv.key.decode(): kv.value.decode() for kv in kvs} == acked

        leader = await leader_of(client, cluster.endpoints())
        survivors = [n for n in cluster.configs if n != leader]
        # a watcher on a follower sees every change exactly once, in order, across the
        # leader's death
        watching = ChainfireClient([cluster.endpoint(survivors[0])], tls)
        events: list[tuple[bytes, int]] = []

        async def watch() -> None:
            async for ev in watching.watch("k", prefix=True, start_revision=1):
                events.append((ev.kv.key, ev.kv.mod_revision))
                if len(events) == 23:
                    return

        watch_task = asyncio.create_task(watch())
        cluster.kill(leader)
        new_leader = await leader_of(client, [cluster.endpoint(n) for n in survivors], leader)
        assert new_leader != leader
        for i in range(3, 23):
            await client.put(f"k{i}", f"v{i}")
            acked[f"k{i}"] = f"v{i}"
        await asyncio.wait_for(watch_task, 20)
        await watching.close()
        assert [k.decode() for k, _ in events] == [f"k{i}" for i in range(23)]
        revs = [r for _, r in events]
        assert revs == sorted(set(revs))

    # restart everything: every acknowledged key is back on every member
    cluster.stop_all()
    cluster.start_all()
    await asyncio.to_thread(cluster.wait_healthy)
    for node_id in cluster.configs:
        async with ChainfireClient([cluster.endpoint(node_id)], tls) as one:
            kvs = await one.range_prefix("k")
            assert {kv.key.decode(): kv.value.decode() for kv in kvs} == acked


async def test_sigterm_exits_cleanly(cluster: Cluster) -> None:
    assert cluster.kill("node02", signal.SIGTERM) == 0
    log = (cluster.root / "node02.log").read_text()
    assert "chainfire node02 stopped" in log and "Traceback" not in log


async def test_etcdctl_over_mtls(cluster: Cluster) -> None:
    tls = cluster.operator_tls
    env = {
        **os.environ,
        "ETCDCTL_API": "3",
        "ETCDCTL_ENDPOINTS": ",".join(f"https://{ep}" for ep in cluster.endpoints()),
        "ETCDCTL_CACERT": str(tls.ca_file),
        "ETCDCTL_CERT": str(tls.cert_file),
        "ETCDCTL_KEY": str(tls.key_file),
    }

    async def etcdctl(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "etcdctl",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        return out.decode() + err.decode()

    assert (await etcdctl("put", "tls", "yes")).strip() == "OK"
    assert (await etcdctl("get", "tls")).split() == ["tls", "yes"]
    assert (await etcdctl("member", "list")).count("started") == 3
    assert (await etcdctl("endpoint", "health")).count("is healthy") == 3
    # membership change through the engine, asked of a follower (it forwards to the
    # leader): remove the other follower, the remaining two carry on
    async with ChainfireClient(cluster.endpoints(), tls) as client:
        leader = await leader_of(client, cluster.endpoints())
    asked, removed_node = [n for n in cluster.configs if n != leader]
    env["ETCDCTL_ENDPOINTS"] = f"https://{cluster.endpoint(asked)}"
    removed = await etcdctl("member", "remove", f"{member_id(removed_node):x}")
    assert "removed from cluster" in removed
    env["ETCDCTL_ENDPOINTS"] = ",".join(f"https://{cluster.endpoint(n)}" for n in (leader, asked))
    names = [line.split(", ")[2] for line in (await etcdctl("member", "list")).splitlines()]
    assert sorted(names) == sorted([leader, asked])
    assert (await etcdctl("put", "after-remove", "ok")).strip() == "OK"


async def test_stopped_follower_catches_up_through_a_snapshot(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, tls=False, serve_args=("--snapshot-threshold", "50"))
    try:
        cluster.start_all()
        await asyncio.to_thread(cluster.wait_healthy)
        async with ChainfireClient(cluster.endpoints()) as client:
            leader = await leader_of(client, cluster.endpoints())
            lagging = next(n for n in cluster.configs if n != leader)
            assert cluster.kill(lagging, signal.SIGTERM) == 0
            for i in range(200):  # several snapshots: the log it missed is compacted away
                await client.put(f"s{i:03d}", str(i))
        cluster.start(lagging)
        await asyncio.to_thread(cluster.wait_healthy, [lagging])
        async with ChainfireClient([cluster.endpoint(lagging)]) as one:
            for _ in range(100):
                kvs = await one.range_prefix("s")
                if len(kvs) == 200:
                    break
                await asyncio.sleep(0.1)
            assert [kv.value.decode() for kv in kvs] == [str(i) for i in range(200)]
        # the engine logs this when a follower takes a snapshot instead of log entries
        assert "installing snapshot" in (tmp_path / f"{lagging}.log").read_text()
    finally:
        cluster.stop_all()


async def test_member_add_joins_a_new_node(tmp_path: Path) -> None:
    ips = ("127.0.0.71", "127.0.0.72", "127.0.0.73", "127.0.0.74")
    cluster = Cluster(tmp_path, ips=ips, joiners=1)
    tls = cluster.operator_tls
    node04 = cluster.configs["node04"]
    try:
        cluster.start_all()
        await asyncio.to_thread(cluster.wait_healthy)
        async with ChainfireClient(cluster.endpoints(), tls) as client:
            await client.put("before-join", "1")
            cluster.start("node04")  # bootstrap: false, waits to be added
            added = await client.member_add(f"https://node04:{node04.ports.chainfire_peer}")
            assert added.name == "node04"
            assert sorted(m.name for m in await client.member_list()) == [
                "node01",
                "node02",
                "node03",
                "node04",
            ]
        await asyncio.to_thread(cluster.wait_healthy, ["node04"])
        async with ChainfireClient([cluster.endpoint("node04")], tls) as joined:
            assert (await joined.get("before-join")) is not None  # it caught up
            await joined.put("after-join", "2")  # and takes writes (forwarded)
            members = await joined.member_list()
            assert len(members) == 4
    finally:
        cluster.stop_all()


async def test_member_add_of_a_node_rendered_after_the_members_started(tmp_path: Path) -> None:
    """The founders start knowing nothing of node04; adding it re-renders their files
    (`plasma provision add-node`, `plasma lab add-node`), which they re-read: no restart."""
    ips = ("127.0.0.71", "127.0.0.72", "127.0.0.73", "127.0.0.74")
    cluster = Cluster(tmp_path, ips=ips, joiners=1)
    founders = {n: cluster.configs[n] for n in cluster.founders}
    for node_id, cfg in founders.items():
        cfg.model_copy(update={"hosts": {}}).dump(tmp_path / f"{node_id}.json")
    node04 = cluster.configs["node04"]
    try:
        cluster.start_all()
        await asyncio.to_thread(cluster.wait_healthy)
        for node_id, cfg in founders.items():
            cfg.model_copy(update={"hosts": {}, "peers": node04.peers}).dump(
                tmp_path / f"{node_id}.json"
            )
        async with ChainfireClient(cluster.endpoints(), cluster.operator_tls) as client:
            await client.put("before-join", "1")
            cluster.start("node04")
            # by IP, as etcdctl users often do: named from the re-read config
            added = await client.member_add(f"https://{node04.ip}:{node04.ports.chainfire_peer}")
            assert added.name == "node04"
            await asyncio.to_thread(cluster.wait_healthy, ["node04"])
            # every founder names node04's client URL now (from the file it re-read)
            for node_id in founders:
                async with ChainfireClient([cluster.endpoint(node_id)], cluster.operator_tls) as c:
                    urls = {m.name: list(m.clientURLs) for m in await c.member_list()}
                assert urls["node04"] == [f"https://{cluster.endpoint('node04')}"], urls
        async with ChainfireClient([cluster.endpoint("node04")], cluster.operator_tls) as joined:
            assert (await joined.get("before-join")) is not None
            await joined.put("after-join", "2")
    finally:
        cluster.stop_all()
