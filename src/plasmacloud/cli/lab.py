"""`plasma lab ...`: rehearse the cluster on this machine (up, status, env, logs, down).

Every command opens the lab its directory holds, whatever its backend (process, netns or
qemu), and makes one call to it through :mod:`plasmacloud.cli.lab_run` (``run``); a flag
or command the backend cannot honour is refused by name.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from plasmacloud.cli import lab_chaos, lab_members, lab_qemu
from plasmacloud.cli import lab_run as run
from plasmacloud.cli._common import (
    DirOpt,
    JsonOpt,
    NodeArg,
    console,
    err,
    fail,
    open_any_lab,
    open_lab,
)
from plasmacloud.cli.lab_run import InsideOpt
from plasmacloud.common.errors import EXIT_USAGE
from plasmacloud.lab.backend import LabError

app = typer.Typer(
    help="Rehearse a cluster on this machine: up, status, env, validate, down.",
    no_args_is_help=True,
)

JunitOpt = Annotated[
    Path | None, typer.Option("--junit", help="also write the checklist as JUnit XML here")
]
PersistenceOpt = Annotated[
    bool,
    typer.Option(
        "--persistence",
        help="also write markers, restart every node's services (a qemu lab: hard-reset "
        "every VM) and check the markers are back",
    ),
]
WaitOpt = Annotated[float, typer.Option("--wait", help="seconds to wait for a ready cluster first")]
CheckOpt = Annotated[
    list[str] | None, typer.Option("--check", help="only this check id (repeatable)")
]


@app.command()
def up(
    lab_dir: DirOpt = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="for a new lab: process (127.x addresses, the default), netns (a namespace "
            "per node) or qemu (VMs that PXE-boot and install; `plasma lab qemu up --help` "
            "for its own options)",
            show_default=False,
        ),
    ] = None,
    wipe: Annotated[bool, typer.Option("--wipe", help="delete old data, configs, PKI")] = False,
    validate: Annotated[bool, typer.Option("--validate", help="run the checklist once up")] = False,
    junit: JunitOpt = None,
    persistence: PersistenceOpt = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="seconds to wait for a healthy cluster (default 60; qemu: for every "
            "install, default 1200)",
            show_default=False,
        ),
    ] = None,
    scratch: Annotated[
        bool,
        typer.Option(
            "--scratch",
            help="a new lab picks a random free address range (process: 127.x.y.11-13, "
            "netns: 10.x.y.0/24) instead of the default, so it runs beside other labs; "
            "kept in its lab.json for later commands",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate certs and configs, start every node, wait for health and a leader."""
    for flag, given in (("--junit", junit is not None), ("--persistence", persistence)):
        if given and not validate:
            raise fail(LabError(f"{flag} is part of the checklist: add --validate"), EXIT_USAGE)
    lab = open_any_lab(lab_dir, backend, scratch)
    flags = {"--wipe": wipe, "--validate": validate, "--timeout": timeout is not None}
    flags |= {"--scratch": scratch, "--json": as_json}
    raise typer.Exit(run.up(lab, flags, wipe, timeout, as_json, validate, junit, persistence))


@app.command()
def status(lab_dir: DirOpt = None, as_json: JsonOpt = False, inside: InsideOpt = False) -> None:
    """Members, leader agreement, health per node and service, processes or VMs."""
    raise typer.Exit(run.status(open_any_lab(lab_dir, inside=inside), as_json))


@app.command()
def env(lab_dir: DirOpt = None) -> None:
    """Print shell exports for etcdctl: `eval "$(plasma lab env)"; etcdctl member list`."""
    typer.echo("\n".join(open_any_lab(lab_dir).env_lines()))


@app.command("validate")
def validate_cmd(
    lab_dir: DirOpt = None,
    as_json: JsonOpt = False,
    junit: JunitOpt = None,
    persistence: PersistenceOpt = False,
    wait: WaitOpt = 0.0,
    check: CheckOpt = None,
    inside: InsideOpt = False,
) -> None:
    """Run the cluster checklist against the running lab (non-zero exit on any failure)."""
    lab = open_any_lab(lab_dir, inside=inside)
    raise typer.Exit(run.run_validate(lab, as_json, junit, persistence, wait, check))


@app.command("bootstrap-iam")
def bootstrap_cmd(
    lab_dir: DirOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the cluster")] = 120.0,
    inside: InsideOpt = False,
) -> None:
    """Create IAM's first admin in the lab's cluster (idempotent; `lab up` does it)."""
    raise typer.Exit(run.bootstrap(open_any_lab(lab_dir, inside=inside), wait))


@app.command()
def logs(
    node: NodeArg,
    lab_dir: DirOpt = None,
    service: Annotated[
        str | None,
        typer.Option(help="which service's log (default chainfire)", show_default=False),
    ] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="lines to show")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
) -> None:
    """Show a node's service log (optionally follow it like tail -f); in a qemu lab the
    node's serial console, which carries every service's log."""
    run.logs(open_any_lab(lab_dir), node, service, lines, follow)


@app.command("ssh")
def ssh_cmd(
    node: NodeArg,
    lab_dir: DirOpt = None,
    command: Annotated[list[str] | None, typer.Argument(help="command to run")] = None,
) -> None:
    """SSH into a qemu lab's VM with the lab's key (process and netns nodes are local
    processes: `plasma lab logs`, or `ip netns exec` for a netns node)."""
    run.ssh(open_any_lab(lab_dir), node, command)


@app.command()
def start(node: NodeArg, lab_dir: DirOpt = None) -> None:
    """Start one node's services (after stop/kill; a qemu lab: power the VM on)."""
    run.node_op(open_any_lab(lab_dir), node, "start")


@app.command()
def stop(node: NodeArg, lab_dir: DirOpt = None) -> None:
    """Stop one node gracefully (SIGTERM, then SIGKILL; a qemu lab: power the VM off)."""
    run.node_op(open_any_lab(lab_dir), node, "stop")


@app.command()
def kill(
    node: NodeArg,
    lab_dir: DirOpt = None,
    sig: Annotated[str, typer.Option("--signal", "-s", help="KILL, TERM, STOP, CONT...")] = "KILL",
) -> None:
    """Send a signal to one node's services (default SIGKILL, a crash; a VM: power cut)."""
    try:
        parsed = signal.Signals[f"SIG{sig.upper().removeprefix('SIG')}"]
    except KeyError as exc:
        raise fail(LabError(f"unknown signal {sig!r}"), EXIT_USAGE) from exc
    run.node_op(open_any_lab(lab_dir), node, "kill", parsed)


@app.command()
def down(
    lab_dir: DirOpt = None,
    wipe: Annotated[bool, typer.Option("--wipe", help="also delete data, configs, PKI")] = False,
) -> None:
    """Stop exactly what this lab started (data kept unless --wipe)."""
    run.down(open_any_lab(lab_dir), wipe)


@app.command()
def restore(
    backup: Annotated[Path, typer.Argument(help="a `plasma cluster backup` directory")],
    lab_dir: DirOpt = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="seconds to wait for a healthy cluster (default 60; qemu 600)", show_default=False
        ),
    ] = None,
    as_json: JsonOpt = False,
    inside: InsideOpt = False,
) -> None:
    """Replace the lab's whole state with a backup's: every key, row, user, policy and
    signing key (the backup is checked before anything stops). A process or netns lab is
    stopped and started again; a qemu lab's VMs stay up, their services are restored over
    SSH as a real cluster's nodes are (`plasma chainfire restore` on each)."""
    import asyncio

    from plasmacloud.cluster.backup import BackupError
    from plasmacloud.cluster.control import ClusterError
    from plasmacloud.lab.qemu_lab import QemuLab
    from plasmacloud.lab.restore import restore_lab

    def progress(step: str) -> None:
        if not as_json:
            err.print(f"[dim]restore:[/dim] {step}")

    surface = open_any_lab(lab_dir, inside=inside)
    try:
        if isinstance(surface, QemuLab):
            from plasmacloud.lab.qemu_day2 import restore_vms
            from plasmacloud.lab.qemu_target import QEMU_RECOVER_S

            argv = ["lab", "restore", str(backup.resolve()), *(["--json"] if as_json else [])]
            if timeout is not None:
                argv += ["--timeout", str(timeout)]
            if (code := run.relayed(surface, argv)) is not None:
                raise typer.Exit(code)
            wait = QEMU_RECOVER_S if timeout is None else timeout
            done = asyncio.run(restore_vms(surface.backend, backup, wait, progress))
        else:
            done = asyncio.run(restore_lab(open_lab(lab_dir), backup, timeout or 60.0, progress))
    except BackupError as exc:
        raise fail(exc, EXIT_USAGE) from None
    except (ClusterError, TimeoutError) as exc:  # LabError is one
        raise fail(exc) from None
    summary = {
        "backup": str(backup),
        "cluster": done.manifest.cluster,
        "created_at": done.manifest.created_at,
        "chainfire_revision": done.manifest.chainfire.detail["revision"],
        "iam_records": done.manifest.iam.detail["records"],
        "seconds": round(done.seconds, 1),
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        console.print(
            f"restored {surface.root} from {backup} (taken {summary['created_at']}): "
            f"Chainfire at revision {summary['chainfire_revision']}, "
            f"{summary['iam_records']} IAM records, FlareDB loaded; down for {summary['seconds']} s"
        )


# the fault commands live in lab_chaos; registered here, after this group's own
app.command()(lab_chaos.partition)
app.command()(lab_chaos.heal)
app.command()(lab_chaos.chaos)
lab_qemu.app.command("chaos")(lab_chaos.qemu_chaos_cmd)
app.command("add-node")(lab_members.add_node)
app.command("remove-node")(lab_members.remove_node)
app.add_typer(lab_qemu.app, name="qemu")
