"""The QEMU lab as a :class:`~plasmacloud.lab.surface.LabSurface`.

Its nodes are VMs on 192.168.100.0/24, an address range that exists only inside the lab
namespace: whatever talks to the cluster (status, validate, chaos, IAM's bootstrap) runs
there, the ``plasma`` command re-executed through :meth:`QemuLab.relay` with ``--inside``.
Power, consoles, SSH and the lab network are driven from the host.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plasmacloud.cluster.probe import describe, probe_cluster
from plasmacloud.lab.backend import LabError, LabUsageError
from plasmacloud.lab.env import env_lines
from plasmacloud.lab.grids import cluster_grid
from plasmacloud.lab.qemu import QemuBackend, vm_ssh_options
from plasmacloud.lab.qemu_bringup import (
    bootstrap_admin_within,
    follow_installs,
    mark_joined,
    validate_until_green,
)
from plasmacloud.lab.qemu_layout import DEFAULT_MEMORY_MB
from plasmacloud.lab.qemu_net import namespace_exists
from plasmacloud.lab.qemu_target import qemu_target
from plasmacloud.lab.services import plasma_executable
from plasmacloud.lab.ssh_target import ssh_preflight
from plasmacloud.lab.surface import Grid, LabStatus, Say, refuse
from plasmacloud.provision.spec import SSHTarget
from plasmacloud.provision.states import State, StateFile

if TYPE_CHECKING:
    from plasmacloud.cluster.target import ClusterTarget
    from plasmacloud.validate.results import CheckResult

NAME = "qemu"


NO_PARTITION = (
    "network faults need the netns backend (this lab runs qemu); the qemu lab cuts power "
    "instead: `plasma lab chaos --faults power`"
)


def progress_grid(backend: QemuBackend, data: StateFile, started: float) -> Grid:
    """One row per node: VM, provisioning state, last step, error."""
    colour = {State.FAILED: "red", State.INSTALLED: "green", State.JOINED: "green"}
    rows = []
    for node_id, st in data.nodes.items():
        vm = backend.node_status(node_id).services[0]
        state = f"[{colour.get(st.state, 'yellow')}]{st.state}[/]"
        vm_txt = f"pid {vm.pid}" if vm.running else f"[red]{vm.note}[/red]"
        rows.append((node_id, vm_txt, state, st.last_step or "-", (st.error or "")[:70]))
    title = f"qemu lab {backend.paths.root} ({backend.state.accel})"
    columns = ("node", "vm", "state", "last step", "error")
    return Grid(title, columns, rows, f"{time.monotonic() - started:.0f} s")


class QemuLab:
    """A :class:`~plasmacloud.lab.qemu.QemuBackend` behind the common lab surface;
    ``inside``: this process already runs in the lab namespace."""

    name = NAME
    default_up_timeout = 1200.0  # for every install
    refused_up_flags = {
        "--scratch": "the QEMU lab always uses its own namespace and 192.168.100.0/24",
        "--json": "its bring-up is a live install table; once up, `plasma lab status --json` "
        "and `plasma lab validate --json` report it as JSON",
    }

    def __init__(self, backend: QemuBackend, inside: bool = False) -> None:
        self.backend = backend
        self.inside = inside
        self.started = time.monotonic()

    @property
    def root(self) -> Path:
        return self.backend.paths.root

    @property
    def render_tree(self) -> tuple[Path, Path] | None:
        return self.backend.paths.spec, self.backend.paths.out

    def relay(self, argv: list[str], pass_fds: Sequence[int] = ()) -> int | None:
        if self.inside:
            return None
        if not namespace_exists(self.backend.names.namespace):
            raise LabError(f"the qemu lab in {self.root} is not up; `plasma lab up --backend qemu`")
        plasma = [plasma_executable(), *argv, "--dir", str(self.root), "--inside"]
        run = subprocess.run(self.backend.in_namespace(plasma), pass_fds=pass_fds, check=False)
        return run.returncode

    # -- up --------------------------------------------------------------------------------

    def up(self, wipe: bool, say: Say) -> None:
        if wipe:
            self.down(wipe=True)
        self.started = time.monotonic()
        say("building/reusing the netboot image and the lab network...")
        try:
            self.backend.up()
        except LabError:
            raise
        except (OSError, RuntimeError) as exc:  # image build, QEMU, dnsmasq
            raise LabError(str(exc)) from exc
        state = self.backend.state
        say(f"image {state.image_key} in {state.timings['image_s']} s")

    def wait_up(self, timeout: float, on_progress: Callable[[LabStatus], None]) -> LabStatus:
        backend = self.backend
        wanted = backend.only or list(backend.provisioning().nodes)
        shown: list[LabStatus] = []

        def show(data: StateFile) -> None:
            grid = progress_grid(backend, data, self.started)
            shown[:] = [LabStatus(False, {}, [grid])]
            on_progress(shown[0])

        installed, states = follow_installs(backend, wanted, self.started + timeout, show)
        if not installed:
            raise LabError(f"not installed: {states}; `plasma lab logs NODE` for the console")
        return LabStatus(True, {}, shown[-1].grids)

    def failure_logs(self) -> list[tuple[Path, str]]:
        return []  # the error names the console to read

    def where(self) -> list[Grid | str]:
        elapsed = time.monotonic() - self.started
        return [f"all installed in {elapsed:.0f} s; SSH: plasma lab ssh node01"]

    def bootstrap_iam(self, wait: float, warn: Say) -> str:
        if not self.backend.runs_iam():
            return ""
        admin = bootstrap_admin_within(self.backend, wait, warn)
        if admin is None:
            raise LabError(f"IAM bootstrap: Chainfire not ready after {wait:.0f} s")
        return f"IAM admin {admin.username!r}: {self.backend.paths.admin}"

    # -- looking at it (inside the namespace) ----------------------------------------------

    def status(self, warn: Say) -> LabStatus:
        backend = self.backend
        configs, tls, services = backend.validation_target()
        view = asyncio.run(probe_cluster(configs, services, tls))
        mark_joined(backend, view, warn)
        data = backend.provisioning()
        nodes = [
            {
                "node": v.node_id,
                "vm": backend.node_status(v.node_id).running,
                "provisioning": data.nodes[v.node_id].state if v.node_id in data.nodes else None,
                **v.as_json(),
            }
            for v in view.nodes
        ]
        doc: dict[str, Any] = {
            "dir": str(self.root),
            "backend": NAME,
            "accel": backend.state.accel,
            "ready": view.ready,
            "leader": view.leader_node,
            "nodes": nodes,
        }
        grids = [
            progress_grid(backend, data, time.monotonic()),
            cluster_grid(view, "cluster (probed inside the lab namespace)"),
        ]
        return LabStatus(view.ready, doc, grids, "" if view.ready else describe(view))

    def env_lines(self, secrets: bool = True) -> list[str]:
        """The exports; the clients must run in the lab namespace, the only place the
        VMs' addresses exist (``ip netns exec $PLASMA_LAB_NETNS etcdctl ...``)."""
        configs, tls, services = self.backend.validation_target()
        ns = self.backend.names.namespace
        return [
            f"# the lab's addresses exist only in its namespace: ip netns exec {ns} etcdctl ...",
            f"export PLASMA_LAB_NETNS={ns}",
            *env_lines(configs, services, tls, self.backend.paths.admin, self.root, secrets),
        ]

    def validate(
        self, wait: float, only: list[str] | None, persistence: bool, on_waiting: Say, warn: Say
    ) -> list[CheckResult]:
        return asyncio.run(
            validate_until_green(
                self.backend, self.target(), wait, only, persistence, on_waiting, warn
            )
        )

    def target(self) -> ClusterTarget:
        return qemu_target(self.backend)

    def chaos_preflight(self, target: ClusterTarget) -> list[str]:
        return ssh_preflight(target)  # the VMs' services are driven over SSH

    def log_path(self, node_id: str, service: str | None) -> Path:
        if service is not None:
            why = "a VM's serial console carries every service's log (`plasma lab logs NODE`)"
            raise refuse(NAME, "--service", why)
        serial = self.backend.paths.serial(node_id)
        if not serial.exists():
            raise LabUsageError(f"no console log {serial}")
        return serial

    def ssh_argv(self, node_id: str, command: list[str]) -> list[str]:
        vm = next((v for v in self.backend.state.vms if v.node_id == node_id), None)
        if vm is None or vm.ssh_port is None:
            raise LabUsageError(f"{node_id} is not running with an SSH forward")
        target = SSHTarget(host="127.0.0.1", port=vm.ssh_port)
        return [*vm_ssh_options(self.backend).argv(target), *command]

    # -- power: start = on (PXE boot), stop = off (QMP quit), kill = cut, reset ------------

    def _power(self, op: Callable[[str], None], node_id: str) -> None:
        try:
            op(node_id)
        except KeyError as exc:
            raise LabUsageError(f"no node {exc}") from exc
        except OSError as exc:
            raise LabError(str(exc)) from exc

    def start_node(self, node_id: str) -> None:
        self._power(self.backend.start_node, node_id)

    def stop_node(self, node_id: str) -> None:
        self._power(self.backend.stop_node, node_id)

    def kill_node(self, node_id: str, sig: signal.Signals) -> None:
        if sig != signal.SIGKILL:
            why = "a VM can only have its power cut (SIGKILL), `plasma lab stop` powers it off"
            raise refuse(NAME, f"--signal {sig.name}", why)
        self._power(self.backend.kill_node, node_id)

    def reset_node(self, node_id: str) -> None:
        """The reset button: the VM PXE-boots again."""
        self._power(self.backend.reset_node, node_id)

    def partition(self, node_id: str, peers: list[str]) -> dict[str, list[str]]:
        raise LabUsageError(NO_PARTITION)

    def heal(self) -> dict[str, list[str]]:
        raise LabUsageError(NO_PARTITION)

    def down(self, wipe: bool) -> str:
        try:
            self.backend.down()
            if wipe:
                self.backend.wipe()
        except LabError:
            raise
        except RuntimeError as exc:  # a network process that would not stop
            raise LabError(str(exc)) from exc
        done = f"down, namespace {self.backend.names.namespace} gone" + (", wiped" if wipe else "")
        return f"qemu lab {self.root}: {done}"


def open_qemu_lab(
    root: Path,
    inside: bool = False,
    nodes: list[str] | None = None,
    memory_mb: int = DEFAULT_MEMORY_MB,
    services: list[str] | None = None,
) -> QemuLab:
    """The QEMU lab in ``root``; ``nodes``, ``memory_mb``, ``services``: what a new lab's
    VMs get (``plasma lab qemu up``); LabUsageError for an unknown service."""
    try:
        backend = QemuBackend(root, nodes=nodes, memory_mb=memory_mb, services=services)
    except KeyError as exc:
        raise LabUsageError(str(exc)) from exc
    return QemuLab(backend, inside)
