"""`plasma lab add-node` / `remove-node`: grow and shrink a running lab (registered on
`plasma lab` by :mod:`plasmacloud.cli.lab`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plasmacloud.cli._common import (
    DirOpt,
    JsonOpt,
    NodeArg,
    call,
    console,
    err,
    fail,
    open_any_lab,
    open_lab,
)
from plasmacloud.cli.lab_run import InsideOpt, relayed
from plasmacloud.common.errors import EXIT_USAGE

if TYPE_CHECKING:
    from plasmacloud.cluster.membership import Change, Progress
    from plasmacloud.lab.qemu_lab import QemuLab


def _qemu_add(lab: QemuLab, node: str | None, as_json: bool, progress: Progress) -> Change:
    """add-node on a QEMU lab: on the host, the next node provisioned and its VM installed,
    then (re-run inside the lab namespace, ``node`` set) its join to every service."""
    import asyncio

    from plasmacloud.lab.qemu_day2 import INSTALL_TIMEOUT_S, join_vm, provision_vm
    from plasmacloud.lab.surface import refuse

    if not lab.inside:
        if node is not None:
            why = "it adds the next node of its cluster.yaml (a PXE-booted VM)"
            raise fail(refuse(lab.name, "add-node NODE", why), EXIT_USAGE)
        new = call(provision_vm, lab.backend, progress, INSTALL_TIMEOUT_S)
        code = relayed(lab, ["lab", "add-node", new, *(["--json"] if as_json else [])])
        raise typer.Exit(code or 0)
    assert node is not None
    return asyncio.run(join_vm(lab.backend, node, progress))


def _membership(
    lab_dir: Path | None, as_json: bool, node: str | None, remove: bool, inside: bool = False
) -> None:
    """add-node / remove-node: the change, its progress on stderr, a summary."""
    import asyncio

    from plasmacloud.cluster.control import ClusterError
    from plasmacloud.lab.backend import LabError
    from plasmacloud.lab.members import add_lab_node, remove_lab_node
    from plasmacloud.lab.qemu_lab import QemuLab
    from plasmacloud.lab.surface import refuse

    steps: list[str] = []  # said as they happen, and in the JSON

    def progress(step: str) -> None:
        steps.append(step)
        if not as_json:
            err.print(f"[dim]{'remove' if remove else 'add'}:[/dim] {step}")

    surface = open_any_lab(lab_dir, inside=inside)
    if isinstance(surface, QemuLab):
        if remove:
            why = "VMs join by PXE boot; take one out with `plasma cluster remove-node`"
            raise fail(refuse(surface.name, "remove-node", why), EXIT_USAGE)
        try:
            change = _qemu_add(surface, node, as_json, progress)
        except (ClusterError, LabError) as exc:
            raise fail(exc) from None
        members = [c.node_id for c in surface.target().configs]
        _report(change, members, steps, as_json, remove)
        return
    lab = open_lab(lab_dir)
    try:
        if remove:
            assert node is not None
            change = asyncio.run(remove_lab_node(lab, node, progress))
        else:
            change = asyncio.run(add_lab_node(lab, progress, node))
    except ClusterError as exc:
        raise fail(exc) from None
    _report(change, lab.spec.node_ids, steps, as_json, remove)


def _report(
    change: Change, members: list[str], steps: list[str], as_json: bool, remove: bool
) -> None:
    """The change as JSON or one line."""
    from dataclasses import asdict

    if as_json:
        typer.echo(json.dumps({**asdict(change), "members": members, "steps": steps}))
        return
    done = f"{'removed' if remove else 'added'} {change.node_id}"
    if change.moved_leader_to:
        done += f" (leadership moved to {change.moved_leader_to} first)"
    console.print(f"{done} in {change.seconds:.1f} s; members: {', '.join(members)}")


def add_node(
    node: Annotated[
        str | None,
        typer.Argument(help="a removed node's id, to replace it (default: the next, node04...)"),
    ] = None,
    lab_dir: DirOpt = None,
    as_json: JsonOpt = False,
    inside: InsideOpt = False,
) -> None:
    """Add a node to the running lab: certificate, config (bootstrap: false), start, then
    Chainfire member add and FlareDB join (IAM comes with Chainfire). A qemu lab adds the
    next node of its cluster.yaml as provisioning does: a new VM PXE-boots and installs."""
    _membership(lab_dir, as_json, node, remove=False, inside=inside)


def remove_node(node: NodeArg, lab_dir: DirOpt = None, as_json: JsonOpt = False) -> None:
    """Take a node out of Chainfire, FlareDB and IAM (moving Chainfire's leadership away
    first if it leads), stop it and drop it from the lab."""
    _membership(lab_dir, as_json, node, remove=True)
