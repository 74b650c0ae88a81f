"""Quorum loss on a lab with IAM and auth on, as an operator lives it: `plasma cluster
recover` is refused on a healthy cluster; then two of three nodes die for good (killed,
data wiped), writes fail, and `plasma cluster recover --from node01` makes the survivor a
one-member cluster: every key, row and user is back, writes work, IAM logs users in and
a token issued before the loss still verifies. A lost member started again alone learns
it is no longer a member and stops. Prints the unavailability window. And the per-node
mode a real survivor runs on its machine, with its services stopped."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.cluster.recover import (
    Recovered,
    recover_cluster,
    wait_serving_alone,
)
from plasmacloud.cluster.services import flaredb_url
from plasmacloud.common.tls import client_context
from plasmacloud.flaredb.client import Client
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import NetnsNames, lab_objects
from plasmacloud.lab.services import CHAINFIRE, FLAREDB, plasma_executable
from plasmacloud.lab.target import lab_target

from .chaos_clients import ChaosClients
from .conftest import READY_TIMEOUT_S, etcdctl_env, running_lab
from .test_backup_restore import iam, plasma, sql
from .test_iam_lab import (
    ALICE_PW,
    IamLab,
    etcdctl,
    etcdctl_as,
    password_token,
    put_as,
    started_iam_lab,
)

pytestmark = pytest.mark.slow

SURVIVOR = "node01"
LOST = ("node02", "node03")
CHAOS_S = 20.0  # the chaos clients stop by then, whatever happens
# writes during the outage are all of unknown outcome, so a register's linearizability
# search is wider than in a chaos run's short faults
MAX_STATES = 2_000_000


def survivor_etcdctl(lab: IamLab, *args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl as the operator against the survivor only (the lost members' endpoints
    would only slow it down)."""
    return etcdctl_as(lab, lab.tls, *args, endpoint=lab.lab.spec.client_endpoints()[0])


async def wait_replicated(lab: Lab) -> None:
    """Until every node has applied as far as the others: the survivor holds every write."""
    async with asyncio.timeout(30):
        while len({n.raft_index for n in (await lab.probe()).nodes}) != 1:
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("backend", ["process", "netns"])
def test_the_survivor_of_a_lost_majority_becomes_a_serving_cluster(
    tmp_path: Path, backend: str
) -> None:
    with started_iam_lab(tmp_path / "lab", backend) as lab:
        root = str(lab.lab.layout.root)
        refused = plasma(lab, "cluster", "recover", "--from", SURVIVOR, "--dir", root)
        assert refused.returncode == 1 and "a quorum" in refused.stderr, refused.stderr
        assert asyncio.run(lab.lab.probe()).ready  # the refusal stopped nothing

        for i in range(20):
            assert etcdctl(lab, "put", f"app/{i:02d}", f"v{i}").returncode == 0
        asyncio.run(sql(lab, "/db/execute", ["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
        asyncio.run(
            sql(lab, "/db/execute", [["INSERT INTO t(v) VALUES(?)", f"r{i}"] for i in range(10)])
        )
        urls = lab.iam_urls()[:1]
        token = asyncio.run(password_token(urls, lab.lab.layout.ca_file, "alice", ALICE_PW))
        asyncio.run(wait_replicated(lab.lab))

        lost_at = time.monotonic()
        for node in LOST:
            lab.lab.backend.kill_node(node, signal.SIGKILL)
            shutil.rmtree(lab.lab.layout.data_dir(node))
        failed = survivor_etcdctl(lab, "put", "app/during", "x")
        # a follower knows at once it has no leader; a leader times the proposal out (or
        # etcdctl gives up first)
        assert failed.returncode != 0, failed.stdout
        refusals = ("no leader", "timed out", "deadline exceeded")
        assert any(m in failed.stderr for m in refusals), failed.stderr

        recover_at = time.monotonic()
        recovered = plasma(lab, "cluster", "recover", "--from", SURVIVOR, "--dir", root, "--json")
        recover_s = time.monotonic() - recover_at
        assert recovered.returncode == 0, recovered.stderr
        done = json.loads(recovered.stdout)
        assert sorted(done["groups"]) == ["chainfire", "flaredb"]
        assert done["reachable"] == []
        for forced in done["groups"].values():
            assert list(forced["members"]) == [SURVIVOR]

        put = survivor_etcdctl(lab, "put", "app/after", "y")
        assert put.returncode == 0, put.stderr
        window = time.monotonic() - lost_at
        print(
            f"\nquorum loss -> first write: {window:.1f} s; `plasma cluster recover`: "
            f"{recover_s:.1f} s, of which survivor stopped -> serving alone: "
            f"{done['seconds']:.1f} s"
        )

        got = survivor_etcdctl(lab, "get", "app/", "--prefix", "--keys-only")
        assert got.returncode == 0, got.stderr
        want = {f"app/{i:02d}" for i in range(20)} | {"app/after"}
        # the put that failed may or may not be in the survivor's log (a leader appended
        # it before timing it out): an indeterminate outcome, committed if it is there
        assert set(got.stdout.split()) - {"app/during"} == want
        status = Client(lab.flaredb_urls()[0], client_context(lab.tls)).status()
        assert status["store"]["raft"]["voters"] == 1, status  # what rqlite's /status says
        counted = asyncio.run(sql(lab, "/db/request", ["SELECT count(*) FROM t"]))
        assert counted["results"][0]["values"] == [[10]]  # type: ignore[index]
        asyncio.run(sql(lab, "/db/execute", [["INSERT INTO t(v) VALUES(?)", "after"]]))
        users = asyncio.run(iam(lab, "GET", "/v1/users"))  # an admin login
        assert "alice" in json.dumps(users)
        me = asyncio.run(iam(lab, "GET", "/v1/self", token=token))
        assert "alice" in json.dumps(me)  # issued before the loss, verified after
        assert asyncio.run(put_as(lab, 0, b"app/by-alice", token)) == grpc.StatusCode.OK
        again = asyncio.run(password_token(urls, lab.lab.layout.ca_file, "alice", ALICE_PW))
        assert again

        # the lab dropped the lost members (no `plasma lab start` can bring them back with
        # the old membership); growing back to three is adding new, empty members
        assert sorted(done["dropped"]) == sorted(LOST)
        grow_at = time.monotonic()
        for _ in LOST:
            added = plasma(lab, "lab", "add-node", "--dir", root, "--json")
            assert added.returncode == 0, added.stderr
        print(f"grown back to three in {time.monotonic() - grow_at:.1f} s")
        listed = survivor_etcdctl(lab, "member", "list", "-w", "json")
        names = sorted(m["name"] for m in json.loads(listed.stdout)["members"])
        assert names == sorted([SURVIVOR, *LOST])
        newest = lab.lab.configs([LOST[-1]])[0]
        endpoint = f"https://{newest.listen_host}:{newest.ports.chainfire_client}"
        read = etcdctl_as(lab, lab.tls, "get", "app/05", "--consistency=s", endpoint=endpoint)
        assert read.stdout.split()[-1:] == ["v5"], read.stdout + read.stderr
        assert survivor_etcdctl(lab, "put", "app/last", "z").returncode == 0


def test_the_per_node_mode_rewrites_a_stopped_survivor(fresh_lab: Lab) -> None:
    """What an operator runs on a real survivor: stop its services, `plasma cluster recover
    --config` on the machine, start them again (here a Chainfire-only lab)."""
    env = etcdctl_env(fresh_lab)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)

    for i in range(10):
        assert run("etcdctl", "put", f"k{i}", "v").returncode == 0
    asyncio.run(wait_replicated(fresh_lab))
    for node in LOST:
        fresh_lab.backend.kill_node(node, signal.SIGKILL)
        shutil.rmtree(fresh_lab.layout.data_dir(node))
    config = str(fresh_lab.layout.config_path(SURVIVOR))
    recover = (plasma_executable(), "cluster", "recover", "--from", SURVIVOR, "--config", config)

    running = run(*recover)
    assert running.returncode == 1 and "still run" in running.stderr, running.stderr
    fresh_lab.backend.stop_node(SURVIVOR)
    done = run(*recover)
    assert done.returncode == 0, done.stderr
    assert f"start {SURVIVOR}'s services now" in done.stdout
    fresh_lab.backend.start_node(SURVIVOR)

    cfg = fresh_lab.configs([SURVIVOR])[0]
    asyncio.run(wait_serving_alone(cfg, fresh_lab.services, fresh_lab.operator_tls, 60))
    env["ETCDCTL_ENDPOINTS"] = fresh_lab.spec.client_endpoints()[0]
    assert run("etcdctl", "put", "after", "v").returncode == 0
    got = run("etcdctl", "get", "", "--prefix", "--keys-only")
    assert set(got.stdout.split()) == {f"k{i}" for i in range(10)} | {"after"}


async def align_leaders(lab: Lab) -> str:
    """Move Chainfire's leadership to FlareDB's leader; that node, which then holds every
    write either service acknowledged (a leader has each entry before it is committed)."""
    cfgs = {c.node_id: c for c in lab.configs()}
    async with aiohttp.ClientSession() as session:
        url = flaredb_url(cfgs[SURVIVOR]) + "/status"
        async with session.get(url, ssl=client_context(lab.operator_tls)) as resp:
            flare_leader = str((await resp.json())["store"]["leader"]["node_id"])
    view = await lab.probe()
    target = next(n.member_id for n in view.nodes if n.node_id == flare_leader)
    leader = view.leader_node
    if leader is not None and leader != flare_leader:
        async with dial(client_target(cfgs[leader]), lab.operator_tls) as ch:
            request = rpc_pb2.MoveLeaderRequest(targetID=target or 0)
            await rpc_pb2_grpc.MaintenanceStub(ch).MoveLeader(request, timeout=10)
    await lab.wait_ready(timeout=READY_TIMEOUT_S)
    assert (await lab.probe()).leader_node == flare_leader
    return flare_leader


@pytest.fixture(params=["process", "netns"])
def chaos_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """A ready Chainfire + FlareDB lab on each backend that runs on this machine."""
    with running_lab(tmp_path / "lab", (CHAINFIRE, FLAREDB), str(request.param)) as lab:
        yield lab
    assert lab_objects(NetnsNames.for_lab(lab.layout.root)) == []


async def test_recovery_under_a_chaos_workload_loses_no_acknowledged_write(
    chaos_lab: Lab,
) -> None:
    """Chaos clients (registers, a set, a FlareDB table) write to every node while two
    nodes die for good and the leader of both services is recovered alone: the history is
    linearizable and every acknowledged add is in the final reads through the survivor."""
    lab = chaos_lab
    survivor = await align_leaders(lab)
    chaos = await ChaosClients.open(lab, "chaos_recover")
    rec = chaos.rec

    async def lose_and_recover() -> tuple[float, Recovered]:
        await asyncio.sleep(4)
        assert (await lab.probe([survivor])).nodes[0].leader_id is not None
        for node in (n for n in lab.spec.node_ids if n != survivor):
            await asyncio.to_thread(lab.backend.kill_node, node, signal.SIGKILL)
            shutil.rmtree(lab.layout.data_dir(node))
        lost_at = rec.now()  # both gone: nothing invoked from here on can commit before recovery
        await asyncio.sleep(2)  # the clients' writes fail meanwhile
        target = lab_target(lab)
        return lost_at, await recover_cluster(target, survivor, False, 60, lambda _m: None)

    try:
        *_, (lost_at, done) = await asyncio.gather(*chaos.workers(CHAOS_S), lose_and_recover())
        await chaos.final_reads(survivor)
    finally:
        await chaos.close()

    chaos.check("quorum loss", max_states=MAX_STATES)
    acked = chaos.acknowledged()
    after = [op.complete for op in acked if op.invoke > lost_at and op.complete is not None]
    assert after, "no write was acknowledged after the recovery"
    print(
        f"\nchaos + quorum loss ({lab.state.backend}): {len(acked)} writes acknowledged, "
        f"{sum(op.outcome == 'unknown' for op in rec.ops)} unknown; first acknowledged "
        f"write {min(after) - lost_at:.1f} s after the loss (recover {done.seconds:.1f} s)"
    )
