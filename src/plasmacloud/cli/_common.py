"""What the ``plasma`` command modules share: consoles, the error exit, common options
and opening the lab a command names.

Light on purpose, like every module of this package: subsystems are imported inside the
functions that use them, so ``plasma --help`` does not load them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from plasmacloud.common.errors import EXIT_FAILURE, EXIT_USAGE
from plasmacloud.lab.layout import LAB_DIR_ENV, default_lab_dir

if TYPE_CHECKING:
    from plasmacloud.lab.control import Lab

console = Console()
err = Console(stderr=True)

DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        envvar=LAB_DIR_ENV,
        help="lab directory (default: $PLASMA_LAB_DIR or ~/.local/state/plasmacloud/lab)",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
NodeArg = Annotated[str, typer.Argument(help="node id, e.g. node01")]


def fail(exc: Exception, code: int = EXIT_FAILURE) -> typer.Exit:
    """Say ``exc`` on stderr; the exit to raise."""
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code)


def open_lab(lab_dir: Path | None, backend: str = "process", scratch: bool = False) -> Lab:
    """The lab in ``lab_dir``; ``scratch``: a lab not created yet gets a random free
    address range (as the tests' labs do) instead of the fixed default."""
    from plasmacloud.lab.backend import LabError
    from plasmacloud.lab.control import Lab
    from plasmacloud.lab.netns import scratch_netns_spec
    from plasmacloud.lab.spec import scratch_spec

    root = lab_dir or default_lab_dir()
    try:
        lab = Lab.open(root, backend=backend)
        if scratch and not lab.layout.state_path.exists():
            spec = scratch_netns_spec() if backend == "netns" else scratch_spec()
            lab = Lab.open(root, spec, backend=backend)
        return lab
    except LabError as exc:
        raise fail(exc, EXIT_USAGE) from exc
