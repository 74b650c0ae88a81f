"""The ssh backend against real sshd servers, one per netns lab node.

Each node's namespace runs ``sshd -D`` on port 22 of the node's lab address (host key,
authorized_keys and config generated in the test's temp dir, root by key only, no PAM).
The namespaces have no systemd, so the backend's service manager is ``node_ctl``; the
ssh transport, host-key learning and status parsing are the production code paths.
sshd processes are stopped by the pids recorded here, the namespaces destroyed, even
when a test fails.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plasmacloud.lab.backend import LabError
from plasmacloud.lab.netns import NetnsNames, create_network, destroy_network, scratch_netns_spec
from plasmacloud.lab.ssh import NodeCtl, SSHBackend, SSHOptions, Systemd, unit_name
from plasmacloud.provision.spec import SSHTarget

pytestmark = pytest.mark.slow

SSHD = "/usr/sbin/sshd"
SERVICES = ("chainfire", "flaredb")
PORT_WAIT_S = 20.0


@dataclass
class SSHLab:
    backend: SSHBackend
    unit_dirs: dict[str, Path]
    known_hosts: Path


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30
    )


def _sshd_config(tmp: Path, address: str, node_id: str) -> Path:
    cfg = tmp / f"sshd-{node_id}.conf"
    cfg.write_text(
        f"ListenAddress {address}:22\n"
        f"HostKey {tmp / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        f"PidFile {tmp / f'sshd-{node_id}.pid'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        # the key files live under /tmp, which is world-writable (sticky)
        "StrictModes no\n"
    )
    return cfg


def _wait_port(address: str, port: int) -> None:
    deadline = time.monotonic() + PORT_WAIT_S
    while True:
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def ssh_lab(tmp_path: Path) -> Iterator[SSHLab]:
    """Three netns nodes, each with an sshd and unit files for a long-running process."""
    spec = scratch_netns_spec()
    names = NetnsNames.for_lab(tmp_path)
    sshds: list[subprocess.Popen[bytes]] = []
    try:
        create_network(names, spec)
        _keygen(tmp_path / "id")
        _keygen(tmp_path / "host_key")
        (tmp_path / "authorized_keys").write_text((tmp_path / "id.pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        targets, unit_dirs = {}, {}
        for node_id in spec.node_ids:
            address = str(spec.ip_of(node_id))
            cfg = _sshd_config(tmp_path, address, node_id)
            ns = names.namespace(node_id)
            sshds.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(cfg)],
                    stdout=(tmp_path / f"sshd-{node_id}.log").open("ab"),
                    stderr=subprocess.STDOUT,
                )
            )
            units = tmp_path / node_id / "units"
            units.mkdir(parents=True)
            for svc in SERVICES:
                argv = [sys.executable, "-c", f"import time; time.sleep(600)  # {node_id} {svc}"]
                (units / f"{unit_name(svc)}.argv").write_text(json.dumps(argv))
            targets[node_id] = SSHTarget(host=address)
            unit_dirs[node_id] = units
        for target in targets.values():
            _wait_port(target.host, 22)
        known_hosts = tmp_path / "known_hosts"
        options = SSHOptions(known_hosts=known_hosts, identity=tmp_path / "id", accept_new=True)
        # the unit directory differs per node, so each node gets its own backend view
        yield SSHLab(SSHBackend(targets, options, services=SERVICES), unit_dirs, known_hosts)
    finally:
        for proc in sshds:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        assert destroy_network(names) == []


def _node_backend(lab: SSHLab, node_id: str) -> SSHBackend:
    """The lab's backend driving ``node_id`` through node_ctl on that node's unit dir."""
    prefix = (
        sys.executable,
        "-m",
        "plasmacloud.lab.node_ctl",
        "--dir",
        str(lab.unit_dirs[node_id]),
    )
    b = lab.backend
    return SSHBackend({node_id: b.targets[node_id]}, b.options, NodeCtl(prefix), b.services)


def _running(backend: SSHBackend, node_id: str) -> list[bool]:
    return [s.running for s in backend.node_status(node_id).services]


def test_start_stop_kill_over_ssh(ssh_lab: SSHLab) -> None:
    node = "node02"
    backend = _node_backend(ssh_lab, node)
    assert _running(backend, node) == [False, False]
    assert backend.node_status(node).services[0].note == "inactive"
    backend.start_node(node)
    assert _running(backend, node) == [True, True]
    assert backend.node_status(node).running
    # the host key was learned on first contact into the lab's own file
    host = ssh_lab.backend.targets[node].host
    found = subprocess.run(
        ["ssh-keygen", "-F", host, "-f", str(ssh_lab.known_hosts)], capture_output=True, timeout=30
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
    other = _node_backend(ssh_lab, "node01")
    assert _running(other, "node01") == [False, False]


def test_changed_host_key_is_refused(ssh_lab: SSHLab, tmp_path: Path) -> None:
    node = "node01"
    host = ssh_lab.backend.targets[node].host
    _keygen(tmp_path / "other")
    fake = (tmp_path / "other.pub").read_text().split()[:2]
    ssh_lab.known_hosts.write_text(f"{host} {' '.join(fake)}\n")
    with pytest.raises(LabError, match="exit 255"):
        _node_backend(ssh_lab, node).node_status(node)


def test_systemd_commands_use_the_deployed_unit_names() -> None:
    units = SSHBackend({}, SSHOptions(Path("/k"))).units
    assert units == ["plasmacloud-chainfire", "plasmacloud-flaredb", "plasmacloud-iam"]
    assert Systemd().kill(units[:1], signal.SIGSTOP) == [
        "systemctl", "kill", "-s", "SIGSTOP", "plasmacloud-chainfire"
    ]  # fmt: skip
    argv = SSHOptions(Path("/k"), Path("/id")).argv(SSHTarget(host="10.0.0.1", port=2222))
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert argv[-1] == "root@10.0.0.1" and argv[argv.index("-p") + 1] == "2222"
