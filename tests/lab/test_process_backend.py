"""The process backend: own process groups, exact stop/kill, stale pid records, persistence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from plasmacloud.common.config import NodeConfig
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.pids import children, cmdline
from plasmacloud.lab.process import is_ours
from plasmacloud.lab.services import ServiceSpec
from plasmacloud.lab.spec import LabSpec, scratch_spec

# A stand-in service: sleeps until signalled; its argv names its config so it is unique.
SLEEPER = ServiceSpec(
    name="sleeper",
    argv=lambda path, _cfg, _plasma: [
        sys.executable,
        "-c",
        "import time; time.sleep(600)",
        str(path),
    ],
    health_url=lambda c: f"http://{c.listen_host}:{c.ports.chainfire_metrics}/health",
)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab.open(tmp_path / "lab", LabSpec(tls=False), services=(SLEEPER,))
    try:
        yield lab
    finally:
        lab.backend.down()


def test_spec_refuses_addresses_outside_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        LabSpec(first_ip=IPv4Address("192.168.100.11"))
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        LabSpec(first_ip=IPv4Address("127.255.255.254"), node_count=3)


def test_scratch_spec_is_loopback_off_the_default_range() -> None:
    spec = scratch_spec()
    assert spec.first_ip.is_loopback
    assert spec.first_ip != LabSpec().first_ip
    assert [str(spec.ip_of(n)) for n in spec.node_ids][-1].endswith(".13")


def test_configs_name_every_peer_and_resolve_without_dns(lab: Lab) -> None:
    lab.prepare()
    cfg = NodeConfig.load(lab.layout.config_path("node02"))
    assert str(cfg.ip) == "127.0.0.12"
    assert [p.node_id for p in cfg.peers] == ["node01", "node02", "node03"]
    assert cfg.resolve("node03") == "127.0.0.13"
    assert cfg.data_dir == lab.layout.data_dir("node02")
    assert cfg.tls.cert_file == lab.layout.pki_dir / "node02.crt"
    assert lab.layout.state_path.exists()


def test_up_starts_each_service_in_its_own_process_group(lab: Lab) -> None:
    lab.up()
    recs = lab.state.processes
    assert sorted(r.node_id for r in recs) == ["node01", "node02", "node03"]
    for rec in recs:
        assert is_ours(rec)
        assert os.getpgid(rec.pid) == rec.pid != os.getpgid(0)
        assert str(lab.layout.config_path(rec.node_id)) in (cmdline(rec.pid) or [])
    assert all(lab.backend.node_status(n).running for n in lab.spec.node_ids)
    # up again is idempotent: same pids
    before = {r.pid for r in recs}
    lab.up()
    assert {r.pid for r in lab.state.processes} == before


def test_stop_kill_start_and_down_touch_only_their_targets(lab: Lab) -> None:
    lab.up()
    pids = {r.node_id: r.pid for r in lab.state.processes}
    lab.backend.stop_node("node01")
    assert cmdline(pids["node01"]) is None
    assert lab.backend.node_status("node01").services[0].note == "not started"
    lab.backend.kill_node("node02", signal.SIGKILL)
    assert cmdline(pids["node02"]) is None
    assert lab.backend.node_status("node03").running
    lab.backend.start_node("node01")
    assert lab.backend.node_status("node01").running
    lab.down()
    assert not lab.running()
    assert all(cmdline(pid) is None for pid in pids.values())
    assert Lab.open(lab.layout.root, services=(SLEEPER,)).state.processes == []


def test_unknown_node_is_a_clear_error(lab: Lab) -> None:
    with pytest.raises(LabError, match="no node 'node07'"):
        lab.backend.stop_node("node07")


def test_reused_pid_is_reported_stale_and_never_signalled(lab: Lab) -> None:
    lab.up()
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        rec = lab.state.records("node01")[0]
        lab.backend.kill_node("node01")
        # Pretend the kernel reused node01's pid for an unrelated program.
        lab.state.processes.append(rec.model_copy(update={"pid": bystander.pid}))
        status = lab.backend.node_status("node01").services[0]
        assert not status.running
        assert status.note.startswith("stale record")
        lab.down()
        assert bystander.poll() is None, "down must not signal a pid it did not start"
    finally:
        bystander.kill()
        bystander.wait()


def test_data_survives_down_up_and_wipe_removes_it(lab: Lab) -> None:
    lab.up()
    marker = lab.layout.data_dir("node03") / "marker"
    marker.write_text("kept")
    lab.down()
    lab.up()
    assert marker.read_text() == "kept"
    with pytest.raises(LabError, match="running"):
        lab.wipe()
    lab.down(wipe=True)
    assert not marker.exists()
    assert not lab.layout.state_path.exists()


def test_a_running_lab_refuses_a_different_spec(lab: Lab) -> None:
    lab.up()
    with pytest.raises(LabError, match="down"):
        Lab.open(lab.layout.root, LabSpec(first_ip=IPv4Address("127.0.0.21"), tls=False))


def test_a_frozen_node_is_still_stopped_by_down(lab: Lab) -> None:
    lab.up()
    pid = lab.state.records("node02")[0].pid
    lab.backend.kill_node("node02", signal.SIGSTOP)
    assert lab.backend.node_status("node02").running, "a stopped (frozen) process is still ours"
    lab.down()
    assert cmdline(pid) is None


def test_children_lists_live_children_only() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in children(os.getpid())
        child.kill()
        deadline = time.monotonic() + 10
        while child.pid in children(os.getpid()):  # a zombie until reaped: not listed
            assert time.monotonic() < deadline, "killed child still listed"
            time.sleep(0.05)
        assert child.pid not in children(os.getpid())
    finally:
        child.kill()
        child.wait()
