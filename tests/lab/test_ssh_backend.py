"""The ssh backend against real sshd servers, one per netns lab node
(:mod:`tests.lab.ssh_nodes`): the ssh transport, host-key learning and status parsing
are the production code paths; the units are driven through ``node_ctl``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasmacloud.cluster.probe import probe_cluster
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.services import CHAINFIRE, FLAREDB
from plasmacloud.lab.ssh import SSHBackend, SSHOptions, Systemd
from plasmacloud.lab.ssh_target import ssh_restart, ssh_target
from plasmacloud.provision.spec import SSHTarget
from plasmacloud.validate.checks import run_checks

from .ssh_nodes import SSHNodes, keygen, lab_units, ssh_nodes, write_units

pytestmark = pytest.mark.slow

SERVICES = ("chainfire", "flaredb")
READY_TIMEOUT_S = 90.0


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[SSHNodes]:
    """Three netns nodes with an sshd each; all gone afterwards."""
    with ssh_nodes(tmp_path) as n:
        yield n


def _sleepers(nodes: SSHNodes, tmp: Path) -> SSHBackend:
    """Units that just sleep, one directory per node."""
    dirs = {
        n: write_units(
            tmp / n / "units",
            {
                svc: [sys.executable, "-c", f"import time; time.sleep(600)  # {n} {svc}"]
                for svc in SERVICES
            },
        )
        for n in nodes.spec.node_ids
    }
    return nodes.backend(dirs, SERVICES)


def _running(backend: SSHBackend, node_id: str) -> list[bool]:
    return [s.running for s in backend.node_status(node_id).services]


def test_start_stop_kill_over_ssh(nodes: SSHNodes, tmp_path: Path) -> None:
    node = "node02"
    backend = _sleepers(nodes, tmp_path)
    assert _running(backend, node) == [False, False]
    assert backend.node_status(node).services[0].note == "inactive"
    backend.start_node(node)
    assert _running(backend, node) == [True, True]
    assert backend.node_status(node).running
    # the host key was learned on first contact into the lab's own file
    host = nodes.targets[node].host
    found = subprocess.run(
        ["ssh-keygen", "-F", host, "-f", str(nodes.known_hosts)], capture_output=True, timeout=30
    )
    assert found.returncode == 0
    backend.stop_node(node)
    assert _running(backend, node) == [False, False]
    backend.start_node(node)
    backend.kill_node(node, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_running(backend, node)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(backend, node) == [False, False]
    # other nodes were never touched
    assert _running(backend, "node01") == [False, False]


def test_changed_host_key_is_refused(nodes: SSHNodes, tmp_path: Path) -> None:
    node = "node01"
    host = nodes.targets[node].host
    keygen(tmp_path / "other")
    fake = (tmp_path / "other.pub").read_text().split()[:2]
    nodes.known_hosts.write_text(f"{host} {' '.join(fake)}\n")
    with pytest.raises(LabError, match="exit 255"):
        _sleepers(nodes, tmp_path).node_status(node)


async def test_validation_with_restart_over_ssh_is_green(nodes: SSHNodes, tmp_path: Path) -> None:
    """Chainfire + FlareDB in the namespaces, started over SSH; the checklist, persistence
    included (every node stopped and started over SSH), all green."""
    lab = Lab.open(tmp_path / "lab", nodes.spec, services=(CHAINFIRE, FLAREDB), backend="netns")
    lab.prepare()
    backend = nodes.backend(lab_units(lab), SERVICES)
    configs, tls = lab.configs(), lab.operator_tls
    try:
        await asyncio.to_thread(backend.up)
        restart = ssh_restart(backend, configs, lab.services, tls, timeout=READY_TIMEOUT_S)
        # the same wait as after the restart: healthy with one leader
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (await probe_cluster(configs, lab.services, tls)).ready:
            assert time.monotonic() < deadline, "cluster never became ready"
            await asyncio.sleep(0.5)
        target = dataclasses.replace(
            ssh_target(backend, configs, lab.services, tls), restart=restart
        )
        results = await run_checks(target, persistence=True)
        failed = [
            (r.check_id, [n.evidence for n in r.results if not n.ok]) for r in results if not r.ok
        ]
        assert failed == []
        assert "persistence" in [r.check_id for r in results]
        assert all(backend.node_status(n).running for n in nodes.spec.node_ids)
    finally:
        await asyncio.to_thread(backend.down)


def test_systemd_commands_use_the_deployed_unit_names() -> None:
    units = SSHBackend({}, SSHOptions(Path("/k"))).units
    assert units == ["plasmacloud-chainfire", "plasmacloud-flaredb", "plasmacloud-iam"]
    assert Systemd().kill(units[:1], signal.SIGSTOP) == [
        "systemctl", "kill", "-s", "SIGSTOP", "plasmacloud-chainfire"
    ]  # fmt: skip
    argv = SSHOptions(Path("/k"), Path("/id")).argv(SSHTarget(host="10.0.0.1", port=2222))
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert argv[-1] == "root@10.0.0.1" and argv[argv.index("-p") + 1] == "2222"
