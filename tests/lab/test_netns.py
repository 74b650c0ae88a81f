"""The netns backend: namespaces on the lab's own bridge, partitions, complete teardown.

These tests create real namespaces, veths and a bridge named ``pcl-<tag>-*`` (the tag
comes from the test's temporary lab dir) and remove them in ``finally`` even on failure.
The lab addresses (a random private /24 per test) only ever exist on those objects.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.chaos.history import Op
from plasmacloud.chaos.history_register import check_key
from plasmacloud.cli import app
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.common.errors import EXIT_USAGE
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import (
    NetnsBackend,
    NetnsNames,
    assert_lab_route,
    create_network,
    destroy_network,
    heal,
    lab_objects,
    netns_spec,
    partition,
    partitions,
    scratch_netns_spec,
)
from plasmacloud.lab.pids import cmdline
from plasmacloud.lab.process import is_ours
from plasmacloud.lab.services import CHAINFIRE, plasma_executable
from plasmacloud.lab.spec import LabSpec

READY_TIMEOUT_S = 60.0


@pytest.fixture
def spec() -> LabSpec:
    """A random private /24, so these tests can run beside another netns lab."""
    return scratch_netns_spec()


@pytest.fixture
def network(tmp_path: Path, spec: LabSpec) -> Iterator[NetnsNames]:
    """A lab network (bridge + 3 namespaces, no services), destroyed afterwards."""
    names = NetnsNames.for_lab(tmp_path)
    try:
        create_network(names, spec)
        yield names
    finally:
        assert destroy_network(names) == []


def test_default_spec_is_the_seeds() -> None:
    spec = netns_spec()
    assert [str(spec.ip_of(n)) for n in spec.node_ids] == [
        "192.168.100.11",
        "192.168.100.12",
        "192.168.100.13",
    ]
    with pytest.raises(ValueError, match="private /24"):
        LabSpec(first_ip=IPv4Address("8.8.8.11"), network="netns")


def test_network_has_the_lab_addresses_and_no_default_route(
    network: NetnsNames, spec: LabSpec
) -> None:
    objects = lab_objects(network)
    assert f"link {network.bridge}" in objects
    for node_id in spec.node_ids:
        ns = network.namespace(node_id)
        assert f"netns {ns}" in objects
        addrs = subprocess.run(
            ["ip", "-n", ns, "-j", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(addrs)[0]["addr_info"][0]["local"] == str(spec.ip_of(node_id))
        routes = subprocess.run(
            ["ip", "-n", ns, "route", "show", "default"], capture_output=True, text=True, check=True
        ).stdout
        assert routes.strip() == "", f"{ns} must have no default route"
    assert_lab_route(network, spec)  # the host reaches the nodes through the lab bridge


def test_a_second_lab_on_the_same_subnet_is_refused(
    network: NetnsNames, spec: LabSpec, tmp_path: Path
) -> None:
    other = NetnsNames.for_lab(tmp_path / "other")
    try:
        with pytest.raises(LabError, match=f"already routes {spec.netns_subnet}"):
            create_network(other, spec)
        assert lab_objects(other) == []
    finally:
        destroy_network(other)


def test_partition_and_heal(network: NetnsNames, spec: LabSpec) -> None:
    partition(network, spec, ["node01"], ["node02", "node03"])
    assert partitions(network, spec) == {
        "node01": ["node02", "node03"],
        "node02": ["node01"],
        "node03": ["node01"],
    }
    heal(network, spec)
    assert partitions(network, spec) == {}


def test_route_guard_refuses_once_the_network_is_gone(tmp_path: Path) -> None:
    names = NetnsNames.for_lab(tmp_path)
    with pytest.raises(LabError, match="not routed through the lab bridge"):
        assert_lab_route(names, netns_spec())


@pytest.mark.slow
def test_down_after_a_killed_up_leaves_nothing(tmp_path: Path, spec: LabSpec) -> None:
    lab_dir = tmp_path / "lab"
    names = NetnsNames.for_lab(lab_dir)
    Lab.open(lab_dir, spec, backend="netns").prepare()  # `up` keeps this saved spec
    argv = [plasma_executable(), "lab", "up", "--backend", "netns", "--dir", str(lab_dir)]
    up = subprocess.Popen(
        [*argv, "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pids: list[int] = []
    try:
        # kill `up` as soon as it has started some services in the namespaces
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not pids:
            state = lab_dir / "lab.json"
            if state.exists():
                with_pids = json.loads(state.read_text()).get("processes", [])
                pids = [p["pid"] for p in with_pids]
            time.sleep(0.05)
        assert pids, "up never started a service"
        os.killpg(up.pid, signal.SIGKILL)
        up.wait(timeout=10)
        assert lab_objects(names), "the half-made lab should still be there"
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
        down = subprocess.run(
            [plasma_executable(), "lab", "down", "--dir", str(lab_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        destroy_network(names)  # in case `down` itself failed: never leave a lab behind
    assert down.returncode == 0, down.stderr
    assert lab_objects(names) == []
    assert not [p for p in pids if cmdline(p) is not None]  # none alive (zombies are gone)


@pytest.fixture
def netns_lab(tmp_path: Path, spec: LabSpec) -> Iterator[Lab]:
    lab = Lab.open(tmp_path / "lab", spec, services=(CHAINFIRE,), backend="netns")
    try:
        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        yield lab
    finally:
        lab.down()
    assert not any(is_ours(p) for p in lab.state.processes)


async def _put(lab: Lab, node: str, key: bytes, timeout: float) -> bool:
    """One Put through one node, no retries: True only if it was acknowledged."""
    (cfg,) = lab.configs([node])
    async with dial(client_target(cfg), lab.operator_tls) as ch:
        try:
            await rpc_pb2_grpc.KVStub(ch).Put(
                rpc_pb2.PutRequest(key=key, value=b"v"), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
    return True


async def _keys(lab: Lab, node: str, prefix: bytes) -> set[bytes]:
    (cfg,) = lab.configs([node])
    async with dial(client_target(cfg), lab.operator_tls) as ch:
        resp = await rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=prefix + b"\xff", serializable=True),
            timeout=5,
        )
    return {kv.key for kv in resp.kvs}


async def _minority_reads(lab: Lab, minority: str, majority: list[str]) -> None:
    """A linearizable read through the cut-off node fails; a serializable one (which etcd
    allows to be stale) returns its old view, and the history checker flags exactly that."""
    (cfg,) = lab.configs([minority])
    async with dial(client_target(cfg), lab.operator_tls) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        with pytest.raises(grpc.aio.AioRpcError):
            await kv.Range(rpc_pb2.RangeRequest(key=b"/part/stale"), timeout=2)
        t0 = time.monotonic()
        assert await _put(lab, majority[0], b"/part/stale", timeout=5)
        t1 = time.monotonic()
        await asyncio.sleep(0.01)  # the read begins strictly after the write was acknowledged
        t2 = time.monotonic()
        resp = await kv.Range(
            rpc_pb2.RangeRequest(key=b"/part/stale", serializable=True), timeout=5
        )
        t3 = time.monotonic()
    seen = resp.kvs[0].value.decode() if resp.kvs else None
    assert seen is None, "the cut-off node cannot know the majority's write"
    history = [
        Op(process=0, kind="write", key="/part/stale", value="v", invoke=0.0, complete=t1 - t0,
           outcome="ok", node=majority[0]),
        Op(process=1, kind="read", key="/part/stale", result=seen, invoke=t2 - t0,
           complete=t3 - t0, outcome="ok", node=minority),
    ]  # fmt: skip
    assert check_key("/part/stale", history).status == "violation"


@pytest.mark.slow
async def test_partitioned_minority_never_acknowledges_and_heal_converges(
    netns_lab: Lab,
) -> None:
    view = await netns_lab.wait_ready(timeout=READY_TIMEOUT_S)
    # cut off the leader itself: the harder case (it must step down, not keep acking)
    minority = view.leader_node
    assert minority is not None
    majority = [n for n in netns_lab.spec.node_ids if n != minority]
    backend = netns_lab.backend
    assert isinstance(backend, NetnsBackend)
    backend.partition([minority], majority)
    try:
        await netns_lab.wait_ready(timeout=READY_TIMEOUT_S, nodes=majority)
        acked = set()
        refused = 0
        for i in range(20):
            key = b"/part/maj/%02d" % i
            if await _put(netns_lab, majority[i % 2], key, timeout=5):
                acked.add(key)
            if i % 4 == 0:  # interleaved attempts through the cut-off node, each refused
                if await _put(netns_lab, minority, b"/part/min/%02d" % i, timeout=0.5):
                    raise AssertionError(f"the partitioned {minority} acknowledged a write")
                refused += 1
        assert len(acked) == 20, "the majority must keep accepting writes"
        assert refused == 5
        await _minority_reads(netns_lab, minority, majority)
    finally:
        backend.heal()
    await netns_lab.wait_ready(timeout=READY_TIMEOUT_S)
    deadline = time.monotonic() + 30
    while True:
        views = [await _keys(netns_lab, n, b"/part/") for n in netns_lab.spec.node_ids]
        converged = all(v == views[0] for v in views) and acked <= views[0]
        if converged or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert converged, f"nodes disagree after heal: {[sorted(v) for v in views]}"
    assert not any(k.startswith(b"/part/min/") for k in views[0])


@pytest.mark.slow
async def test_the_majority_accepts_a_write_3_s_after_its_leader_is_cut_off(
    netns_lab: Lab,
) -> None:
    """Failover, three times: cut the leader off, wait 3 s, write through a majority node
    with etcdctl's 5 s deadline and no retry; the write must be acknowledged."""
    backend = netns_lab.backend
    assert isinstance(backend, NetnsBackend)
    for attempt in range(3):
        view = await netns_lab.wait_ready(timeout=READY_TIMEOUT_S)
        leader = view.leader_node
        assert leader is not None
        majority = [n for n in netns_lab.spec.node_ids if n != leader]
        backend.partition([leader], majority)
        try:
            cut = time.monotonic()
            await asyncio.sleep(3)
            ok = await _put(netns_lab, majority[attempt % 2], b"/failover/%d" % attempt, 5)
            print(f"cut {leader}: {'acknowledged' if ok else 'refused'} "
                  f"{time.monotonic() - cut:.2f} s after the cut")  # fmt: skip
            assert ok, f"the majority {majority} refused a write 3 s after {leader} was cut off"
        finally:
            backend.heal()


def test_partition_and_heal_commands(network: NetnsNames, spec: LabSpec, tmp_path: Path) -> None:
    # the `network` fixture's names come from tmp_path, so a lab there owns that network
    Lab.open(tmp_path, spec, backend="netns").prepare()
    runner = CliRunner()
    cut = runner.invoke(
        app, ["lab", "partition", "node02", "--from", "node01,node03", "--dir", str(tmp_path)]
    )
    assert cut.exit_code == 0, cut.output
    assert "node02 cannot reach node01, node03" in cut.output
    assert partitions(network, spec)["node01"] == ["node02"]
    bad = runner.invoke(
        app, ["lab", "partition", "node09", "--from", "node01", "--dir", str(tmp_path)]
    )
    assert bad.exit_code == EXIT_USAGE
    healed = runner.invoke(app, ["lab", "heal", "--dir", str(tmp_path)])
    assert healed.exit_code == 0, healed.output
    assert "no partitions" in healed.output
    assert partitions(network, spec) == {}


def test_partition_command_needs_the_netns_backend(tmp_path: Path) -> None:
    Lab.open(tmp_path, LabSpec()).prepare()
    result = CliRunner().invoke(
        app, ["lab", "partition", "node01", "--from", "node02", "--dir", str(tmp_path)]
    )
    assert result.exit_code == EXIT_USAGE
    assert "need the netns backend" in " ".join(result.output.split())


@pytest.mark.slow
def test_up_validate_is_green_on_netns_and_down_leaves_nothing(
    tmp_path: Path, spec: LabSpec
) -> None:
    lab_dir = tmp_path / "lab"
    Lab.open(lab_dir, spec, backend="netns").prepare()  # `up` keeps this saved spec
    runner = CliRunner()
    try:
        up = runner.invoke(
            app, ["lab", "up", "--backend", "netns", "--validate", "--json", "--dir", str(lab_dir)]
        )
    finally:
        down = runner.invoke(app, ["lab", "down", "--dir", str(lab_dir)])
    assert up.exit_code == 0, up.output
    doc = json.loads(up.stdout)  # one document: the lab's status, the checklist inside
    assert doc["ready"] is True and any(line.startswith("export ") for line in doc["env"])
    report = doc["validation"]
    assert report["ok"] is True
    ids = {c["id"] for c in report["checks"]}
    assert {"health", "chainfire.members", "chainfire.leader", "chainfire.crud"} <= ids
    for check in report["checks"]:
        assert [n["node"] for n in check["nodes"]] == ["node01", "node02", "node03"], check
    assert down.exit_code == 0, down.output
    assert lab_objects(NetnsNames.for_lab(lab_dir)) == []
