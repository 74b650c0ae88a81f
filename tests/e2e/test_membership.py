"""Growing, shrinking and replacing members of a live lab (IAM on) while clients write to
Chainfire and FlareDB: `plasma lab add-node`, `plasma lab remove-node` of the leader,
`plasma cluster remove-node` + `plasma lab add-node` to replace a node. No acknowledged
write is lost, and each step's unavailability window (the longest gap between two
acknowledged writes while it ran) is printed."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from plasmacloud.chainfire.client import ChainfireClient
from plasmacloud.chainfire.node import member_id
from plasmacloud.chaos.run import ChaosConfig, run_chaos
from plasmacloud.common.tls import client_context
from plasmacloud.flaredb.client import Client
from plasmacloud.flaredb.client import Error as FlareError
from plasmacloud.flaredb.models import QueryResult, Statement
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import NetnsNames, lab_objects
from plasmacloud.lab.services import CHAINFIRE, FLAREDB, ServiceSpec, plasma_executable
from plasmacloud.lab.target import lab_target

from .chaos_clients import longest_gap
from .test_iam_lab import IamLab, etcdctl, etcdctl_as, started_iam_lab

pytestmark = pytest.mark.slow

WRITER_LIMIT_S = 400.0  # the writers stop by themselves after this, whatever happens
NODES = ("node01", "node02", "node03", "node04")  # every node the scenario ever has


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[IamLab]:
    with started_iam_lab(tmp_path / "lab") as started:
        yield started


@pytest.fixture(params=["process", "netns"])
def any_lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[IamLab]:
    """The lab on each local backend; a netns lab leaves no namespace, link or bridge,
    the added nodes' included."""
    with started_iam_lab(tmp_path / "lab", request.param) as started:
        yield started
    if request.param == "netns":
        assert lab_objects(NetnsNames.for_lab(started.lab.layout.root)) == []


def ip(lab: Lab, node: str) -> IPv4Address:
    """nodeNN's address, also before it is added (the spec knows only its members)."""
    return lab.spec.first_ip + (int(node.removeprefix("node")) - 1)


def plasma(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([plasma_executable(), *args], capture_output=True, text=True, timeout=300)


@dataclass
class Writes:
    """What one writer got acknowledged (key -> when), and how many failed."""

    acked: dict[int, float] = field(default_factory=dict)
    failed: int = 0

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without an acknowledged write around ``[start, end]``."""
        return longest_gap(sorted(self.acked.values()), start, end)


async def chainfire_writer(stop: threading.Event, lab: Lab, out: Writes) -> None:
    """Put m/NNNNN every 20 ms through every node the scenario has (removed ones refuse)."""
    endpoints = [f"{ip(lab, n)}:{lab.spec.ports.chainfire_client}" for n in NODES]
    client = ChainfireClient(endpoints, lab.operator_tls, timeout=3)
    deadline = time.monotonic() + WRITER_LIMIT_S
    try:
        for key in itertools.count():
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                await client.put(f"m/{key:05d}", b"v")
                out.acked[key] = time.monotonic()
            except Exception:  # unavailable for a moment: counted, the writer goes on
                out.failed += 1
            await asyncio.sleep(0.02)
    finally:
        await client.close()


def flaredb_writer(stop: threading.Event, lab: Lab, out: Writes) -> None:
    """Insert a row every 20 ms, moving to the next node after a failure."""
    ctx = client_context(lab.operator_tls)
    clients = [
        Client(f"https://{ip(lab, n)}:{lab.spec.ports.flaredb_http}", ctx, timeout=3) for n in NODES
    ]
    deadline = time.monotonic() + WRITER_LIMIT_S
    at = 1  # node02: node01 is removed during the run
    for key in itertools.count():
        if stop.is_set() or time.monotonic() > deadline:
            return
        try:
            clients[at].execute([Statement("INSERT INTO m(k) VALUES(?)", (key,))])
            out.acked[key] = time.monotonic()
        except FlareError:
            out.failed += 1
            at = (at + 1) % len(clients)
        time.sleep(0.02)


def members(lab: IamLab, endpoint: str | None = None) -> list[str]:
    args = ["member", "list", "-w", "json"]
    listed = etcdctl_as(lab, lab.tls, *args, endpoint=endpoint)
    assert listed.returncode == 0, listed.stderr
    return sorted(m["name"] for m in json.loads(listed.stdout)["members"])


def flaredb_members(lab: Lab, node: str) -> list[str]:
    url = f"https://{ip(lab, node)}:{lab.spec.ports.flaredb_http}"
    client = Client(url, client_context(lab.operator_tls))
    return sorted(str(n["id"]) for n in client.nodes())


def test_add_remove_the_leader_and_replace_while_writing(any_lab: IamLab) -> None:
    lab = any_lab
    root = str(lab.lab.layout.root)
    assert etcdctl(lab, "put", "seed", "before").returncode == 0
    node02 = f"https://{ip(lab.lab, 'node02')}:{lab.lab.spec.ports.flaredb_http}"
    Client(node02, client_context(lab.tls)).execute(
        [Statement("CREATE TABLE m (k INTEGER PRIMARY KEY)"), Statement("INSERT INTO m VALUES(-1)")]
    )
    kv, rows = Writes(), Writes()
    stop = threading.Event()
    writers = [
        threading.Thread(target=lambda: asyncio.run(chainfire_writer(stop, lab.lab, kv))),
        threading.Thread(target=flaredb_writer, args=(stop, lab.lab, rows)),
    ]
    steps: dict[str, tuple[float, float]] = {}

    def step(name: str, *args: str) -> dict[str, object]:
        began = time.monotonic()
        done = plasma(*args, "--json")
        steps[name] = (began, time.monotonic())
        assert done.returncode == 0, done.stdout + done.stderr
        return dict(json.loads(done.stdout))

    for w in writers:
        w.start()
    try:
        time.sleep(1.0)
        # grow: node04 joins all three services and has the data written before it came
        added = step("add node04", "lab", "add-node", "--dir", root)
        assert added["node_id"] == "node04"
        assert added["members"] == ["node01", "node02", "node03", "node04"]
        if lab.lab.state.backend == "netns":  # node04 got its own namespace on the bridge
            netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
            assert NetnsNames.for_lab(lab.lab.layout.root).namespace("node04") in netns.stdout
        node04 = f"{ip(lab.lab, 'node04')}:{lab.lab.spec.ports.chainfire_client}"
        assert members(lab, node04) == list(NODES)
        assert flaredb_members(lab.lab, "node04") == list(NODES)
        seed = etcdctl_as(lab, lab.tls, "get", "seed", "--print-value-only", endpoint=node04)
        assert seed.stdout.strip() == "before", seed.stderr
        node04_db = f"https://{ip(lab.lab, 'node04')}:{lab.lab.spec.ports.flaredb_http}"
        first = Client(node04_db, client_context(lab.tls)).query(
            [Statement("SELECT k FROM m WHERE k = -1")], level="none"
        )
        assert isinstance(first[0], QueryResult) and first[0].values == [[-1]]

        # shrink: node01 made the leader first, then removed (leadership moves off it)
        moved = etcdctl(lab, "move-leader", f"{member_id('node01'):x}")
        assert moved.returncode == 0, moved.stderr
        removed = step("remove node01 (leader)", "lab", "remove-node", "--dir", root, "node01")
        assert removed["moved_leader_to"] is not None, removed["steps"]
        assert removed["members"] == ["node02", "node03", "node04"]
        env = plasma("lab", "env", "--dir", root).stdout
        assert str(ip(lab.lab, "node01")) + ":" not in env
        assert f"{ip(lab.lab, 'node04')}:" in env

        # replace: node02 out through `plasma cluster`, then in again, empty, same name
        step("remove node02", "cluster", "remove-node", "--dir", root, "node02")
        step("add node02 again", "lab", "add-node", "--dir", root, "node02")
        time.sleep(1.0)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=60)

    lab.lab.state = Lab.open(lab.lab.layout.root).state  # as the commands left lab.json
    assert lab.lab.spec.node_ids == ["node02", "node03", "node04"]
    assert members(lab) == ["node02", "node03", "node04"]
    assert flaredb_members(lab.lab, "node02") == ["node02", "node03", "node04"]
    status = json.loads(plasma("lab", "status", "--dir", root, "--json").stdout)
    assert status["ready"] and [n["node"] for n in status["nodes"]] == [
        "node02",
        "node03",
        "node04",
    ]

    # nothing acknowledged is lost (failed writes may or may not have happened)
    keys = etcdctl(lab, "get", "m/", "--prefix", "--keys-only")
    stored = {int(k.removeprefix("m/")) for k in keys.stdout.split() if k}
    assert set(kv.acked) <= stored, sorted(set(kv.acked) - stored)[:10]
    node03 = f"https://{ip(lab.lab, 'node03')}:{lab.lab.spec.ports.flaredb_http}"
    result = Client(node03, client_context(lab.tls)).query(
        [Statement("SELECT k FROM m WHERE k >= 0")], level="linearizable"
    )
    assert isinstance(result[0], QueryResult), result
    have = {int(r[0]) for r in result[0].values}
    assert set(rows.acked) <= have, sorted(set(rows.acked) - have)[:10]

    print(f"\nChainfire: {len(kv.acked)} puts acknowledged, {kv.failed} failed; "
          f"FlareDB: {len(rows.acked)} inserts acknowledged, {rows.failed} failed")  # fmt: skip
    for name, (began, ended) in steps.items():
        print(
            f"{name}: {ended - began:.1f} s; longest gap between acknowledged writes: "
            f"Chainfire {kv.longest_gap(began, ended):.2f} s, "
            f"FlareDB {rows.longest_gap(began, ended):.2f} s"
        )


def test_removing_a_member_of_a_degraded_cluster_is_refused(lab: IamLab) -> None:
    lab.lab.backend.stop_node("node03")
    done = plasma("cluster", "remove-node", "--dir", str(lab.lab.layout.root), "node02")
    assert done.returncode == 1 and "not healthy" in done.stderr, done.stderr
    node01 = f"{ip(lab.lab, 'node01')}:{lab.lab.spec.ports.chainfire_client}"
    assert members(lab, node01) == ["node01", "node02", "node03"]  # nothing was changed
    assert lab.lab.backend.node_status("node02").running


async def test_chaos_replacing_nodes_keeps_every_history_linearizable(
    lab_factory: Callable[[tuple[ServiceSpec, ...]], Lab], tmp_path: Path
) -> None:
    """The chaos run's register, set and watch clients (and FlareDB's) work while nodes,
    the leader among them, are removed and added back empty: every property holds."""
    lab = lab_factory((CHAINFIRE, FLAREDB))
    cfg = ChaosConfig(40, ("replace",), seed=5, gap_s=(0.5, 1.0), recover_timeout_s=90)
    result = await run_chaos(lab_target(lab), cfg, tmp_path / "history.jsonl", say=lambda _m: None)
    assert result.problems == []
    bad = [v for v in result.verdicts if v.status != "ok"]
    assert not bad, f"history {result.history_path}: {bad}"
    assert result.faults and {f.kind for f in result.faults} == {"replace"}
    ops = result.history.ops
    assert sum(op.outcome == "ok" and op.kind in ("write", "cas", "add") for op in ops) > 50
    for f in result.faults:
        assert f.ready is not None and all(t is not None for t in f.recovery_s.values()), f
        recovery = ", ".join(f"{s} {t:.2f} s" for s, t in f.recovery_s.items() if t is not None)
        print(f"\nreplace {f.targets[0]} ({f.note}): next acknowledged write {recovery}")
