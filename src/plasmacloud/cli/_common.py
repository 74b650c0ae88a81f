"""What the ``plasma`` command modules share: consoles, the error exit, common options
and opening the lab a command names.

Light on purpose, like every module of this package: subsystems are imported inside the
functions that use them, so ``plasma --help`` does not load them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from plasmacloud.common.errors import EXIT_FAILURE, EXIT_USAGE
from plasmacloud.lab.layout import LAB_DIR_ENV

if TYPE_CHECKING:
    from plasmacloud.lab.control import Lab
    from plasmacloud.lab.surface import LabSurface

T = TypeVar("T")

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


def call(fn: Callable[..., T], *args: object, failure: int = EXIT_FAILURE) -> T:
    """``fn(*args)``; a refused request exits EXIT_USAGE, any other lab error ``failure``."""
    from plasmacloud.lab.backend import LabError, LabUsageError

    try:
        return fn(*args)
    except LabUsageError as exc:
        raise fail(exc, EXIT_USAGE) from exc
    except (LabError, OSError) as exc:
        raise fail(exc, failure) from exc


def open_lab(lab_dir: Path | None, backend: str = "process", scratch: bool = False) -> Lab:
    """The process or netns lab in ``lab_dir``, for the commands only those have (a qemu
    lab is refused naming it); ``scratch``: a lab not created yet gets a random free
    address range (as the tests' labs do) instead of the fixed default."""
    from plasmacloud.lab.opener import open_local_lab

    return call(open_local_lab, lab_dir, backend, scratch, failure=EXIT_USAGE)


def open_any_lab(
    lab_dir: Path | None, backend: str | None = None, scratch: bool = False, inside: bool = False
) -> LabSurface:
    """The lab the command names, whatever its backend (see
    :func:`plasmacloud.lab.opener.open_any_lab`); a usage error if it cannot be opened."""
    from plasmacloud.lab.opener import open_any_lab as open_surface

    return call(open_surface, lab_dir, backend, scratch, inside, failure=EXIT_USAGE)
