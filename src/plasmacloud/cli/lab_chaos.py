"""`plasma lab partition|heal|chaos`: network faults and fault runs on a running lab.

Registered on the ``lab`` command group (``plasmacloud.cli.lab.app``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from plasmacloud.cli.lab import DirOpt, NodeArg, _fail, _open, app, console
from plasmacloud.common.errors import EXIT_USAGE
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.netns import NetnsBackend, partitions


def _netns(lab: Lab) -> NetnsBackend:
    backend = lab.backend
    if not isinstance(backend, NetnsBackend):
        raise _fail(
            LabError(
                f"network faults need the netns backend (this lab runs {lab.state.backend}); "
                "`plasma lab up --backend netns --dir ...`"
            ),
            EXIT_USAGE,
        )
    return backend


def _node_list(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _print_cuts(lab: Lab, backend: NetnsBackend) -> None:
    cut = partitions(backend.names, lab.spec)
    if not cut:
        console.print("no partitions: every node reaches every other")
    for node, peers in cut.items():
        console.print(f"{node} cannot reach {', '.join(peers)}")


@app.command()
def partition(
    node: NodeArg,
    from_nodes: Annotated[str, typer.Option("--from", help="comma-separated nodes to cut off")],
    lab_dir: DirOpt = None,
) -> None:
    """Cut NODE off from the given nodes (both directions; the host still reaches all)."""
    lab = _open(lab_dir)
    backend = _netns(lab)
    try:
        backend.partition([node], _node_list(from_nodes))
    except LabError as exc:
        raise _fail(exc, EXIT_USAGE if "no node" in str(exc) else 1) from exc
    _print_cuts(lab, backend)


@app.command()
def heal(lab_dir: DirOpt = None) -> None:
    """Remove every partition."""
    lab = _open(lab_dir)
    backend = _netns(lab)
    backend.heal()
    _print_cuts(lab, backend)
