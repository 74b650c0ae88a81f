"""The ssh backend against real sshd servers, one per netns lab node.

Each node's namespace runs ``sshd -D`` on port 22 of the node's lab address (host key,
authorized_keys and config generated in the test's temp dir, root by key only, no PAM).
The namespaces have no systemd, so the backend's service manager is ``node_ctl``; the
ssh transport, host-key learning and status parsing are the production code paths.
sshd processes are stopped by the pids recorded here, the namespaces destroyed, even
when a test fails.
"""

from __future__ import annotations

import asyncio
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

from plasmacloud.common.config import NodeConfig
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import NetnsNames, create_network, destroy_network, scratch_netns_spec
from plasmacloud.lab.probe import probe_cluster
from plasmacloud.lab.services import CHAINFIRE, FLAREDB
from plasmacloud.lab.spec import LabSpec
from plasmacloud.lab.ssh import (
    NodeCtl,
    ServiceManager,
    SSHBackend,
    SSHOptions,
    Systemd,
    unit_name,
)
from plasmacloud.provision.spec import SSHTarget
from plasmacloud.validate.checks import run_checks
from plasmacloud.validate.ssh_target import ssh_restart

pytestmark = pytest.mark.slow

SSHD = "/usr/sbin/sshd"
SERVICES = ("chainfire", "flaredb")
PORT_WAIT_S = 20.0
READY_TIMEOUT_S = 90.0


@dataclass
class SSHNodes:
    """Netns nodes each running an sshd; the backend reaches them with :attr:`options`."""

    spec: LabSpec
    targets: dict[str, SSHTarget]
    options: SSHOptions
    known_hosts: Path

    def backend(self, unit_dirs: dict[str, Path], services: tuple[str, ...]) -> SSHBackend:
        """Driving each node through node_ctl on that node's unit directory."""
        managers: dict[str, ServiceManager] = {
            n: NodeCtl((sys.executable, "-m", "plasmacloud.lab.node_ctl", "--dir", str(d)))
            for n, d in unit_dirs.items()
        }
        return SSHBackend(self.targets, self.options, services=services, managers=managers)


def _write_units(units: Path, argv_of: dict[str, list[str]]) -> Path:
    units.mkdir(parents=True, exist_ok=True)
    for svc, argv in argv_of.items():
        (units / f"{unit_name(svc)}.argv").write_text(json.dumps(argv))
    return units


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
def nodes(tmp_path: Path) -> Iterator[SSHNodes]:
    """Three netns nodes on a random private /24, an sshd in each; all gone afterwards."""
    spec = scratch_netns_spec()
    names = NetnsNames.for_lab(tmp_path / "lab")
    keys = tmp_path / "ssh"
    keys.mkdir()
    sshds: list[subprocess.Popen[bytes]] = []
    try:
        create_network(names, spec)
        _keygen(keys / "id")
        _keygen(keys / "host_key")
        (keys / "authorized_keys").write_text((keys / "id.pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        targets = {}
        for node_id in spec.node_ids:
            address = str(spec.ip_of(node_id))
            cfg = _sshd_config(keys, address, node_id)
            ns = names.namespace(node_id)
            with (keys / f"sshd-{node_id}.log").open("ab") as log:
                sshds.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(cfg)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            targets[node_id] = SSHTarget(host=address)
        for target in targets.values():
            _wait_port(target.host, 22)
        known_hosts = keys / "known_hosts"
        options = SSHOptions(known_hosts=known_hosts, identity=keys / "id", accept_new=True)
        yield SSHNodes(spec, targets, options, known_hosts)
    finally:
        for proc in sshds:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        assert destroy_network(names) == []


def _sleepers(nodes: SSHNodes, tmp: Path) -> SSHBackend:
    """Units that just sleep, one directory per node."""
    dirs = {
        n: _write_units(
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
    _keygen(tmp_path / "other")
    fake = (tmp_path / "other.pub").read_text().split()[:2]
    nodes.known_hosts.write_text(f"{host} {' '.join(fake)}\n")
    with pytest.raises(LabError, match="exit 255"):
        _sleepers(nodes, tmp_path).node_status(node)


async def test_validation_with_restart_over_ssh_is_green(nodes: SSHNodes, tmp_path: Path) -> None:
    """Chainfire + FlareDB in the namespaces, started over SSH; the checklist, persistence
    included (every node stopped and started over SSH), all green."""
    lab = Lab.open(tmp_path / "lab", nodes.spec, services=(CHAINFIRE, FLAREDB), backend="netns")
    lab.prepare()
    dirs = {}
    for n in nodes.spec.node_ids:
        config_path = lab.layout.config_path(n)
        cfg = NodeConfig.load(config_path)
        argv = {svc.name: svc.argv(config_path, cfg) for svc in lab.services}
        dirs[n] = _write_units(lab.layout.node_dir(n) / "units", argv)
    backend = nodes.backend(dirs, ("chainfire", "flaredb"))
    configs, tls = lab.configs(), lab.operator_tls
    try:
        await asyncio.to_thread(backend.up)
        restart = ssh_restart(backend, configs, lab.services, tls, timeout=READY_TIMEOUT_S)
        # the same wait as after the restart: healthy with one leader
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (await probe_cluster(configs, lab.services, tls)).ready:
            assert time.monotonic() < deadline, "cluster never became ready"
            await asyncio.sleep(0.5)
        results = await run_checks(configs, tls, lab.services, restart=restart)
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
