"""Real sshd servers, one per netns node, for the ssh backend's tests.

Each node's namespace runs ``sshd -D`` on port 22 of the node's lab address (host key,
authorized_keys and config generated in the test's temp dir, root by key only, no PAM).
The namespaces have no systemd, so the backend's service manager is ``node_ctl``; the
ssh transport, host-key learning and status parsing are the production code paths.
sshd processes are stopped by the pids recorded here, the namespaces destroyed, even
when a test fails.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from plasmacloud.common.config import NodeConfig
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import NetnsNames, create_network, destroy_network, scratch_netns_spec
from plasmacloud.lab.services import plasma_executable
from plasmacloud.lab.spec import LabSpec
from plasmacloud.lab.ssh import NodeCtl, ServiceManager, SSHBackend, SSHOptions, unit_name
from plasmacloud.provision.spec import SSHTarget

SSHD = "/usr/sbin/sshd"
PORT_WAIT_S = 20.0


@dataclass
class SSHNodes:
    """Netns nodes each running an sshd; the backend reaches them with :attr:`options`."""

    spec: LabSpec
    targets: dict[str, SSHTarget]
    options: SSHOptions
    known_hosts: Path

    def backend(self, unit_dirs: dict[str, Path], services: tuple[str, ...]) -> SSHBackend:
        """Driving each node through node_ctl on that node's unit directory."""
        return SSHBackend(
            self.targets, self.options, services=services, managers=node_ctl_managers(unit_dirs)
        )


def node_ctl_managers(unit_dirs: dict[str, Path]) -> dict[str, ServiceManager]:
    """node -> node_ctl on that node's unit directory (the namespaces have no systemd)."""
    return {
        n: NodeCtl((sys.executable, "-m", "plasmacloud.lab.node_ctl", "--dir", str(d)))
        for n, d in unit_dirs.items()
    }


def write_units(units: Path, argv_of: dict[str, list[str]]) -> Path:
    """One node_ctl unit per service (``plasmacloud-<service>.argv``) in ``units``."""
    units.mkdir(parents=True, exist_ok=True)
    for svc, argv in argv_of.items():
        (units / f"{unit_name(svc)}.argv").write_text(json.dumps(argv))
    return units


def lab_units(lab: Lab) -> dict[str, Path]:
    """node -> a unit directory running the lab's services with the lab's node configs
    (written by ``lab.prepare()``), as a deployed node's units would."""
    dirs = {}
    for n in lab.spec.node_ids:
        config_path = lab.layout.config_path(n)
        cfg = NodeConfig.load(config_path)
        plasma = plasma_executable()
        argv = {svc.name: svc.argv(config_path, cfg, plasma) for svc in lab.services}
        dirs[n] = write_units(lab.layout.node_dir(n) / "units", argv)
    return dirs


def keygen(path: Path) -> None:
    """A passphrase-less ed25519 key pair at ``path`` and ``path.pub``."""
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


@contextmanager
def ssh_nodes(root: Path) -> Iterator[SSHNodes]:
    """Three netns nodes on a random private /24 (namespaces named after ``root/lab``, so
    a netns :class:`Lab` in ``root/lab`` shares them), an sshd in each; all gone afterwards."""
    spec = scratch_netns_spec()
    names = NetnsNames.for_lab(root / "lab")
    keys = root / "ssh"
    keys.mkdir()
    sshds: list[subprocess.Popen[bytes]] = []
    try:
        create_network(names, spec)
        keygen(keys / "id")
        keygen(keys / "host_key")
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
