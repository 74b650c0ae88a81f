"""The ``ssh`` backend: the services of real machines, controlled over SSH.

Each node of ``cluster.yaml`` is reached at its SSH target with the OpenSSH client
(``BatchMode=yes``: never a password prompt, an identity file, host keys checked against
a known_hosts file the operator supplies, or learned on first contact into a file the
lab owns with ``StrictHostKeyChecking=accept-new``). What runs on the far side is a
:class:`ServiceManager`: :class:`Systemd` in production, driving the
``plasmacloud-<service>`` units the ``ssh`` deploy method installs; :class:`NodeCtl` for
machines without systemd (the netns lab's namespaces, see :mod:`plasmacloud.lab.node_ctl`).
"""

from __future__ import annotations

import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from plasmacloud.cluster.control import NodeStatus, ServiceProcess
from plasmacloud.lab.backend import LabError
from plasmacloud.provision.nix import SERVICES
from plasmacloud.provision.spec import ClusterSpec, SSHTarget

SSH_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10


def unit_name(service: str) -> str:
    """The systemd unit of one service, as the ``ssh`` deploy method names it."""
    return f"plasmacloud-{service}"


class ServiceManager(Protocol):
    """Builds the remote commands that control units on a node."""

    def start(self, units: list[str]) -> list[str]: ...

    def stop(self, units: list[str]) -> list[str]: ...

    def kill(self, units: list[str], sig: signal.Signals) -> list[str]: ...

    def is_active(self, units: list[str]) -> list[str]:
        """Prints one state per unit, ``active`` for a running one."""
        ...


@dataclass(frozen=True)
class Systemd:
    """``systemctl`` verbs (systemd's own stop: SIGTERM, SIGKILL after TimeoutStopSec)."""

    def start(self, units: list[str]) -> list[str]:
        return ["systemctl", "start", *units]

    def stop(self, units: list[str]) -> list[str]:
        return ["systemctl", "stop", *units]

    def kill(self, units: list[str], sig: signal.Signals) -> list[str]:
        return ["systemctl", "kill", "-s", sig.name, *units]

    def is_active(self, units: list[str]) -> list[str]:
        return ["systemctl", "is-active", *units]


@dataclass(frozen=True)
class NodeCtl:
    """The same verbs through a ``node_ctl``-style command (``prefix`` + verb + units)."""

    prefix: tuple[str, ...]

    def start(self, units: list[str]) -> list[str]:
        return [*self.prefix, "start", *units]

    def stop(self, units: list[str]) -> list[str]:
        return [*self.prefix, "stop", *units]

    def kill(self, units: list[str], sig: signal.Signals) -> list[str]:
        return [*self.prefix, "kill", "-s", sig.name, *units]

    def is_active(self, units: list[str]) -> list[str]:
        return [*self.prefix, "is-active", *units]


@dataclass(frozen=True)
class SSHOptions:
    """How the client authenticates the hosts and itself."""

    known_hosts: Path  # the operator's, or a lab-owned file learned with accept-new
    identity: Path | None = None
    accept_new: bool = False  # learn unknown host keys into known_hosts (never changed ones)
    # Only for the QEMU lab's VMs: their installer makes a new host key on every boot and
    # they sit on a network that exists only in the lab's own namespace.
    check_host_keys: bool = True

    def argv(self, target: SSHTarget) -> list[str]:
        """``ssh`` up to (not including) the remote command."""
        strict = "accept-new" if self.accept_new else "yes"
        known = self.known_hosts
        if not self.check_host_keys:
            strict, known = "no", Path("/dev/null")
        argv = [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", f"StrictHostKeyChecking={strict}",
            "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-p", str(target.port),
        ]  # fmt: skip
        if not self.check_host_keys:
            argv += ["-o", "LogLevel=ERROR"]  # no "permanently added" on every command
        if self.identity is not None:
            argv += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        return [*argv, "--", f"{target.user}@{target.host}"]


@dataclass
class SSHBackend:
    """Controls each node's service units over SSH (the :class:`NodeBackend` contract)."""

    targets: dict[str, SSHTarget]
    options: SSHOptions
    manager: ServiceManager = field(default_factory=Systemd)
    services: tuple[str, ...] = tuple(name for name, _ in SERVICES)
    name: str = "ssh"
    # node -> its own manager, for a fleet where some machines differ (default: manager)
    managers: dict[str, ServiceManager] = field(default_factory=dict)

    @classmethod
    def from_spec(
        cls,
        spec: ClusterSpec,
        options: SSHOptions,
        manager: ServiceManager | None = None,
        services: tuple[str, ...] | None = None,
    ) -> SSHBackend:
        """One target per control-plane node of ``cluster.yaml`` (its ``ssh`` or root@ip)."""
        return cls(
            targets={n.node_id: n.target for n in spec.control_plane},
            options=options,
            manager=manager or Systemd(),
            services=services or tuple(name for name, _ in SERVICES),
        )

    @property
    def units(self) -> list[str]:
        return [unit_name(s) for s in self.services]

    def up(self) -> None:
        for node_id in self.targets:
            self.start_node(node_id)

    def start_node(self, node_id: str) -> None:
        self._run(node_id, self._manager(node_id).start(self.units))

    def stop_node(self, node_id: str) -> None:
        self._run(node_id, self._manager(node_id).stop(self.units))

    def kill_node(self, node_id: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal every unit's processes. Under systemd the deployed units have
        ``Restart=on-failure``, so a SIGKILLed service comes back by itself after
        ``RestartSec`` (a crash as production sees it); node_ctl never restarts."""
        self._run(node_id, self._manager(node_id).kill(self.units, sig))

    def node_status(self, node_id: str) -> NodeStatus:
        # is-active exits non-zero when any unit is not active; its output still says which
        out = self._run(node_id, self._manager(node_id).is_active(self.units), check=False)
        states = out.split()
        if len(states) != len(self.units):
            raise LabError(f"{node_id}: unexpected is-active answer {out.strip()!r}")
        return NodeStatus(
            node_id,
            [
                ServiceProcess(svc, state == "active", None, state)
                for svc, state in zip(self.services, states, strict=True)
            ],
        )

    def down(self) -> None:
        for node_id in self.targets:
            self.stop_node(node_id)

    def _manager(self, node_id: str) -> ServiceManager:
        return self.managers.get(node_id, self.manager)

    def _run(self, node_id: str, remote: list[str], check: bool = True) -> str:
        """Run ``remote`` on the node; its stdout. ssh's own failures (255) always raise."""
        if node_id not in self.targets:
            raise LabError(f"no node {node_id!r} (nodes: {', '.join(self.targets)})")
        target = self.targets[node_id]
        return run_remote(self.options, target, shlex.join(remote), f"{node_id} ({target})", check)


def run_remote(
    options: SSHOptions,
    target: SSHTarget,
    remote: str,
    who: str,
    check: bool = True,
    data: bytes = b"",
    timeout: float = SSH_TIMEOUT_S,
) -> str:
    """Run the shell command ``remote`` at ``target`` (``data`` on its stdin); its stdout.
    LabError naming ``who`` when ssh itself fails (255), on any other non-zero exit when
    ``check``, or when it takes over ``timeout`` seconds."""
    argv = [*options.argv(target), remote]
    try:
        proc = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{who}: `{remote}` took over {timeout:.0f} s") from exc
    out = proc.stdout.decode(errors="replace")
    if proc.returncode == 255 or (check and proc.returncode != 0):
        why = proc.stderr.decode(errors="replace").strip() or out.strip()
        raise LabError(f"{who}: `{remote}` failed (exit {proc.returncode}): {why}")
    return out
