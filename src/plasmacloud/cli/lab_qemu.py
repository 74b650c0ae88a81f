"""`plasma lab qemu ...` (and `plasma lab up --backend qemu`): the PXE-booted VM lab."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from plasmacloud.common.errors import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.layout import default_lab_dir
from plasmacloud.lab.probe import probe_cluster
from plasmacloud.lab.qemu import DEFAULT_MEMORY_MB, QemuBackend
from plasmacloud.lab.services import plasma_executable
from plasmacloud.provision.states import State, StateFile
from plasmacloud.validate.checks import CheckResult, checklist, run_checks
from plasmacloud.validate.report import exit_code, report_table
from plasmacloud.validate.target import Target

app = typer.Typer(
    help="The QEMU lab: VMs that PXE-boot from the netboot server and get installed.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)
DONE = {State.INSTALLED, State.JOINED}

DirOpt = Annotated[
    Path | None, typer.Option("--dir", help="lab directory (default: <lab dir>-qemu)")
]
NodeArg = Annotated[str, typer.Argument(help="node id, e.g. node01")]


def lab_dir(path: Path | None) -> Path:
    """The QEMU lab's directory: ``--dir`` or beside the default process lab."""
    return (path or default_lab_dir().with_name("lab-qemu")).expanduser().resolve()


def progress_table(backend: QemuBackend, data: StateFile, started: float) -> Table:
    """One row per node: VM, provisioning state, last step, error."""
    table = Table(title=f"qemu lab {backend.paths.root} ({backend.state.accel})")
    for col in ("node", "vm", "state", "last step", "error"):
        table.add_column(col)
    for node_id, st in data.nodes.items():
        vm = backend.node_status(node_id).services[0]
        colour = {State.FAILED: "red", State.INSTALLED: "green", State.JOINED: "green"}
        state = f"[{colour.get(st.state, 'yellow')}]{st.state}[/]"
        vm_txt = f"pid {vm.pid}" if vm.running else f"[red]{vm.note}[/red]"
        table.add_row(node_id, vm_txt, state, st.last_step or "-", (st.error or "")[:70])
    table.caption = f"{time.monotonic() - started:.0f} s"
    return table


def up(
    path: Path | None,
    nodes: list[str] | None = None,
    memory: int = DEFAULT_MEMORY_MB,
    timeout: float = 1200.0,
    check: bool = False,
    services: list[str] | None = None,
) -> int:
    """Bring the lab up and show each node's provisioning live until all are installed."""
    try:
        backend = QemuBackend(lab_dir(path), nodes=nodes, memory_mb=memory, services=services)
    except KeyError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return EXIT_USAGE
    started = time.monotonic()
    try:
        console.print("building/reusing the netboot image and the lab network...")
        backend.up()
        console.print(f"image {backend.state.image_key} in {backend.state.timings['image_s']} s")
    except (LabError, OSError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        return EXIT_FAILURE
    wanted = nodes or list(backend.provisioning().nodes)
    deadline = started + timeout
    with Live(console=console, refresh_per_second=2) as live:
        while True:
            data = backend.provisioning()
            live.update(progress_table(backend, data, started))
            states = {n: data.nodes[n].state for n in wanted}
            if all(s in DONE for s in states.values()):
                break
            if any(s == State.FAILED for s in states.values()) or time.monotonic() > deadline:
                err.print(f"not installed: {states}; `plasma lab qemu logs NODE` for the console")
                return EXIT_UNAVAILABLE
            time.sleep(1)
    elapsed = time.monotonic() - started
    console.print(f"all installed in {elapsed:.0f} s; SSH: plasma lab qemu ssh node01")
    if not check:
        return 0
    rc = validate(path, wait=max(60.0, deadline - time.monotonic()))
    console.print(f"up + validate: {time.monotonic() - started:.0f} s")
    return rc


@app.command("up")
def up_cmd(
    path: DirOpt = None,
    node: Annotated[list[str] | None, typer.Option(help="only these nodes")] = None,
    memory: Annotated[int, typer.Option(help="MiB per VM")] = DEFAULT_MEMORY_MB,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every install")] = 1200,
    check: Annotated[bool, typer.Option("--validate", help="then run the checklist")] = False,
    service: Annotated[
        list[str] | None, typer.Option(help="services the VMs run (default: all the lab's)")
    ] = None,
) -> None:
    """Build the image, create the lab network, PXE-boot the VMs, follow their installs."""
    raise typer.Exit(up(path, node, memory, timeout, check, service))


@app.command("down")
def down_cmd(path: DirOpt = None) -> None:
    """Power off every VM, stop dnsmasq/netboot/switch, delete the lab namespace."""
    backend = QemuBackend(lab_dir(path))
    try:
        backend.down()
    except (LabError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAILURE) from exc
    console.print(f"qemu lab {backend.paths.root}: down, namespace {backend.names.namespace} gone")


@app.command("status")
def status_cmd(path: DirOpt = None) -> None:
    """Each node's VM and provisioning state."""
    backend = QemuBackend(lab_dir(path))
    console.print(progress_table(backend, backend.provisioning(), time.monotonic()))


@app.command("logs")
def logs_cmd(
    node: NodeArg,
    path: DirOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n")] = 60,
) -> None:
    """The node's serial console (kernel, installer and agent output)."""
    serial = QemuBackend(lab_dir(path)).paths.serial(node)
    if not serial.exists():
        err.print(f"no console log {serial}")
        raise typer.Exit(EXIT_USAGE)
    tail = serial.read_text(errors="replace").splitlines()[-lines:]
    typer.echo("\n".join(tail))


@app.command("ssh")
def ssh_cmd(
    node: NodeArg,
    path: DirOpt = None,
    command: Annotated[list[str] | None, typer.Argument(help="command to run")] = None,
) -> None:
    """SSH into the node (127.0.0.1:220N) with the lab's key."""
    backend = QemuBackend(lab_dir(path))
    vm = next((v for v in backend.state.vms if v.node_id == node), None)
    if vm is None or vm.ssh_port is None:
        err.print(f"{node} is not running with an SSH forward")
        raise typer.Exit(EXIT_USAGE)
    argv = [
        "ssh",
        "-i",
        str(backend.paths.ssh_key),
        "-p",
        str(vm.ssh_port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "root@127.0.0.1",
        *(command or []),
    ]
    os.execvp(argv[0], argv)


@app.command("power")
def power_cmd(
    node: NodeArg,
    action: Annotated[str, typer.Argument(help="on | off | reset | cut")],
    path: DirOpt = None,
) -> None:
    """Power control: on (PXE boot), off (QMP quit), reset (QMP), cut (SIGKILL QEMU)."""
    backend = QemuBackend(lab_dir(path))
    ops = {
        "on": backend.start_node,
        "off": backend.stop_node,
        "reset": backend.reset_node,
        "cut": backend.kill_node,
    }
    if action not in ops:
        err.print(f"unknown action {action!r}; one of {', '.join(ops)}")
        raise typer.Exit(EXIT_USAGE)
    try:
        ops[action](node)
    except (LabError, OSError, KeyError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAILURE) from exc
    console.print(f"{node}: {action} done")


def validate(
    path: Path | None, inside: bool = False, wait: float = 0.0, only: list[str] | None = None
) -> int:
    """The S6 checklist against the VMs, run inside the lab namespace (the host has no
    route to 192.168.100.0/24), repeated for up to ``wait`` s until green; ``only``:
    run just these check ids."""
    backend = QemuBackend(lab_dir(path))
    if not inside:
        argv = [plasma_executable(), "lab", "qemu", "validate", "--dir", str(backend.paths.root)]
        argv += ["--wait", str(wait), "--inside"]
        argv += [a for check in only or [] for a in ("--check", check)]
        return subprocess.run(backend.in_namespace(argv), check=False).returncode
    configs, tls, services = backend.validation_target()

    async def ready_then_check() -> list[CheckResult]:
        # Under TCG a freshly (re)booted cluster may still change leaders for a while:
        # with --wait, run the checklist again until it is green or the time is up.
        deadline = time.monotonic() + wait
        while True:
            view = await probe_cluster(configs, services, tls)
            if view.ready or time.monotonic() > deadline:
                checks = checklist(Target(configs, tls, services, view))
                if only:
                    checks = [c for c in checks if c[0] in only]
                results = await run_checks(configs, tls, services, checks)
                if exit_code(results) == 0 or time.monotonic() > deadline:
                    return results
            await asyncio.sleep(2)

    t0 = time.monotonic()
    results = asyncio.run(ready_then_check())
    console.print(report_table(results, title=f"qemu lab {backend.paths.root}"))
    console.print(f"validated in {time.monotonic() - t0:.0f} s (including the wait for ready)")
    return exit_code(results)


@app.command("validate")
def validate_cmd(
    path: DirOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for a ready cluster")] = 0.0,
    check: Annotated[list[str] | None, typer.Option(help="only this check id (repeatable)")] = None,
    inside: Annotated[bool, typer.Option(hidden=True, help="already in the namespace")] = False,
) -> None:
    """Run the cluster checklist against the VMs (from inside the lab namespace)."""
    raise typer.Exit(validate(path, inside, wait, check))
