"""`plasma lab qemu ...`: the QEMU lab's own group. Each command is the `plasma lab`
command of that name on the QEMU lab (by default `<lab dir>-qemu`), plus what only VMs
have: `up` options for the VMs and `power`."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plasmacloud.cli import lab_run
from plasmacloud.cli._common import NodeArg, call, console, fail, open_any_lab
from plasmacloud.cli.lab_run import InsideOpt
from plasmacloud.common.errors import EXIT_USAGE
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.qemu_layout import DEFAULT_MEMORY_MB, qemu_lab_dir

if TYPE_CHECKING:
    from plasmacloud.lab.surface import LabSurface

app = typer.Typer(
    help="The QEMU lab: VMs that PXE-boot from the netboot server and get installed.",
    no_args_is_help=True,
)

DirOpt = Annotated[
    Path | None, typer.Option("--dir", help="lab directory (default: <lab dir>-qemu)")
]


def qemu_lab(path: Path | None, inside: bool = False) -> LabSurface:
    """The QEMU lab in ``path`` or the default place."""
    return open_any_lab(qemu_lab_dir(path), "qemu", inside=inside)


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
    from plasmacloud.lab.qemu_lab import open_qemu_lab

    root = qemu_lab_dir(path)
    lab = call(open_qemu_lab, root, False, node, memory, service, failure=EXIT_USAGE)
    raise typer.Exit(lab_run.up(lab, {}, False, timeout, False, check, None, False))


@app.command("down")
def down_cmd(
    path: DirOpt = None,
    wipe: Annotated[bool, typer.Option("--wipe", help="also delete disks, configs, PKI")] = False,
) -> None:
    """Power off every VM, stop dnsmasq/netboot/switch, delete the lab namespace."""
    lab_run.down(qemu_lab(path), wipe)


@app.command("status")
def status_cmd(
    path: DirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    inside: InsideOpt = False,
) -> None:
    """Each node's VM and provisioning state, and the cluster's health, members, leader."""
    raise typer.Exit(lab_run.status(qemu_lab(path, inside), as_json))


@app.command("env")
def env_cmd(path: DirOpt = None) -> None:
    """Shell exports for etcdctl/curl against the VMs (run them in the lab namespace)."""
    typer.echo("\n".join(qemu_lab(path).env_lines()))


@app.command("logs")
def logs_cmd(
    node: NodeArg,
    path: DirOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n")] = 60,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
) -> None:
    """The node's serial console (kernel, installer and agent output, service logs)."""
    lab_run.logs(qemu_lab(path), node, None, lines, follow)


@app.command("ssh")
def ssh_cmd(
    node: NodeArg,
    path: DirOpt = None,
    command: Annotated[list[str] | None, typer.Argument(help="command to run")] = None,
) -> None:
    """SSH into the node (127.0.0.1:220N) with the lab's key."""
    lab_run.ssh(qemu_lab(path), node, command)


@app.command("power")
def power_cmd(
    node: NodeArg,
    action: Annotated[str, typer.Argument(help="on | off | reset | cut")],
    path: DirOpt = None,
) -> None:
    """Power control: on (PXE boot), off (QMP quit), reset (QMP), cut (SIGKILL QEMU)."""
    from plasmacloud.lab.qemu_lab import open_qemu_lab

    lab = call(open_qemu_lab, qemu_lab_dir(path), failure=EXIT_USAGE)
    ops = {
        "on": lab.start_node,
        "off": lab.stop_node,
        "reset": lab.reset_node,
        "cut": lambda n: lab.kill_node(n, signal.SIGKILL),
    }
    if action not in ops:
        raise fail(LabError(f"unknown action {action!r}; one of {', '.join(ops)}"), EXIT_USAGE)
    call(ops[action], node)
    console.print(f"{node}: {action} done")


@app.command("bootstrap-iam")
def bootstrap_cmd(
    path: DirOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the cluster")] = 120.0,
    inside: InsideOpt = False,
) -> None:
    """Create IAM's first admin in the VMs' cluster (idempotent; `lab up` does it)."""
    raise typer.Exit(lab_run.bootstrap(qemu_lab(path, inside), wait))


@app.command("validate")
def validate_cmd(
    path: DirOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for a ready cluster")] = 0.0,
    check: Annotated[list[str] | None, typer.Option(help="only this check id (repeatable)")] = None,
    inside: InsideOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    junit: Annotated[Path | None, typer.Option(help="also write JUnit XML here")] = None,
    persistence: Annotated[
        bool, typer.Option(help="then hard-reset every VM and check every marker is back")
    ] = False,
) -> None:
    """Run the cluster checklist against the VMs (from inside the lab namespace)."""
    lab = qemu_lab(path, inside)
    raise typer.Exit(lab_run.run_validate(lab, as_json, junit, persistence, wait, check))
