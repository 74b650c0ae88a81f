"""`plasma lab add-node` / `remove-node`: grow and shrink a running lab (registered on
`plasma lab` by :mod:`plasmacloud.cli.lab`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from plasmacloud.cli._common import DirOpt, JsonOpt, NodeArg, console, err, fail, open_lab


def _membership(lab_dir: Path | None, as_json: bool, node: str | None, remove: bool) -> None:
    """add-node / remove-node: the change, its progress on stderr, a summary."""
    import asyncio
    from dataclasses import asdict

    from plasmacloud.cluster.control import ClusterError
    from plasmacloud.lab.members import add_lab_node, remove_lab_node

    lab = open_lab(lab_dir)

    steps: list[str] = []  # said as they happen, and in the JSON

    def progress(step: str) -> None:
        steps.append(step)
        if not as_json:
            err.print(f"[dim]{'remove' if remove else 'add'}:[/dim] {step}")

    try:
        if remove:
            assert node is not None
            change = asyncio.run(remove_lab_node(lab, node, progress))
        else:
            change = asyncio.run(add_lab_node(lab, progress, node))
    except ClusterError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps({**asdict(change), "members": lab.spec.node_ids, "steps": steps}))
        return
    done = f"{'removed' if remove else 'added'} {change.node_id}"
    if change.moved_leader_to:
        done += f" (leadership moved to {change.moved_leader_to} first)"
    console.print(f"{done} in {change.seconds:.1f} s; members: {', '.join(lab.spec.node_ids)}")


def add_node(
    node: Annotated[
        str | None,
        typer.Argument(help="a removed node's id, to replace it (default: the next, node04...)"),
    ] = None,
    lab_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a node to the running lab: certificate, config (bootstrap: false), start, then
    Chainfire member add and FlareDB join (IAM comes with Chainfire)."""
    _membership(lab_dir, as_json, node, remove=False)


def remove_node(node: NodeArg, lab_dir: DirOpt = None, as_json: JsonOpt = False) -> None:
    """Take a node out of Chainfire, FlareDB and IAM (moving Chainfire's leadership away
    first if it leads), stop it and drop it from the lab."""
    _membership(lab_dir, as_json, node, remove=True)
