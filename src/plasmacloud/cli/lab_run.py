"""What the ``plasma lab`` commands (and their ``plasma lab qemu`` aliases) do with an
opened lab: one call to it, whatever its backend, and the printing.

A command that talks to the cluster first offers itself to ``lab.relay``: a lab whose
addresses exist elsewhere (the QEMU lab's namespace) runs the same command there.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table

from plasmacloud.cli._common import call, console, err, fail
from plasmacloud.common.errors import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from plasmacloud.lab.backend import LabError

if TYPE_CHECKING:
    from plasmacloud.lab.surface import Grid, LabStatus, LabSurface


# set when the command was re-run where the lab's addresses exist (a qemu lab's namespace)
InsideOpt = Annotated[bool, typer.Option("--inside", hidden=True, help="already there")]


def relayed(lab: LabSurface, argv: list[str]) -> int | None:
    """The exit code of ``plasma ARGV`` run where the lab's addresses exist, or None when
    that is here (see :meth:`LabSurface.relay`); a lab that is not up exits unavailable."""
    return call(lab.relay, argv, failure=EXIT_UNAVAILABLE)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")


def table(grid: Grid) -> Table:
    out = Table(title=grid.title, caption=grid.caption or None, show_header=grid.show_header)
    for col in grid.columns:
        out.add_column(col)
    for row in grid.rows:
        out.add_row(*row)
    return out


def show(items: list[Grid | str]) -> None:
    for item in items:
        console.print(item if isinstance(item, str) else table(item))


def _progress(status: LabStatus) -> RenderableType:
    parts: list[RenderableType] = [table(g) for g in status.grids]
    if status.waiting:
        parts.append(f"waiting: {status.waiting}")
    return Group(*parts)


def up(
    lab: LabSurface,
    flags: dict[str, bool],
    wipe: bool,
    timeout: float | None,
    as_json: bool,
    validate: bool,
    junit: Path | None,
    persistence: bool,
) -> int:
    """Bring the lab up, follow it until ready, say where everything is, bootstrap IAM's
    admin, then (``validate``) run the checklist; the exit code. ``flags``: every flag
    given, by name, for the backend to refuse what it cannot honour."""
    from rich.live import Live

    from plasmacloud.lab.surface import refuse

    for flag, why in lab.refused_up_flags.items():
        if flags.get(flag):
            raise fail(refuse(lab.name, flag, why), EXIT_USAGE)
    timeout = lab.default_up_timeout if timeout is None else timeout
    started = time.monotonic()
    call(lab.up, wipe, console.print)
    try:
        if as_json:
            status = lab.wait_up(timeout, lambda _s: None)
        else:
            with Live(console=console, transient=False, refresh_per_second=4) as live:
                status = lab.wait_up(timeout, lambda s: live.update(_progress(s)))
                live.update(Group(*(table(g) for g in status.grids)))
    except LabError as exc:
        for path, tail in lab.failure_logs():
            err.print(f"[bold]--- {path}[/bold]")
            err.print(tail, markup=False, highlight=False)
        raise fail(exc, EXIT_UNAVAILABLE) from exc
    # the admin's password stays out of this output (`plasma lab env` has it)
    doc = {**status.doc, "env": lab.env_lines(secrets=False)}
    if as_json and not validate:
        typer.echo(json.dumps(doc, indent=2))
    elif not as_json:
        console.print()
        show(lab.where())
    left = max(60.0, started + timeout - time.monotonic())
    rc = bootstrap(lab, left)
    if rc != EXIT_OK or not validate:
        if as_json and validate:  # the lab is up; its checklist did not run
            typer.echo(json.dumps(doc, indent=2))
        return rc
    # one JSON document for scripts: the lab's status with the checklist's report in it
    return run_validate(lab, as_json, junit, persistence, left, envelope=doc)


def bootstrap(lab: LabSurface, wait: float) -> int:
    """IAM's first admin (idempotent), trying for up to ``wait`` s; the exit code."""
    rc = relayed(lab, ["lab", "bootstrap-iam", "--wait", str(wait)])
    if rc is not None:
        return rc
    said = call(lab.bootstrap_iam, wait, warn, failure=EXIT_UNAVAILABLE)
    if said:
        console.print(said)
    return EXIT_OK


def status(lab: LabSurface, as_json: bool) -> int:
    """The lab's nodes and cluster; EXIT_OK only when the cluster is ready."""
    rc = relayed(lab, ["lab", "status", *(["--json"] if as_json else [])])
    if rc is not None:
        return rc
    st = call(lab.status, warn)
    if as_json:
        typer.echo(json.dumps(st.doc, indent=2))
    else:
        show(list(st.grids))
        if st.waiting:
            console.print(f"[yellow]not ready:[/yellow] {st.waiting}")
    return EXIT_OK if st.ready else EXIT_UNAVAILABLE


def run_validate(
    lab: LabSurface,
    as_json: bool,
    junit: Path | None,
    persistence: bool,
    wait: float = 0.0,
    only: list[str] | None = None,
    envelope: dict[str, object] | None = None,
) -> int:
    """The checklist against the lab's cluster (after waiting up to ``wait`` s for it to
    be ready); ``only``: just these check ids; ``envelope``: see :func:`emit`. The exit
    code."""
    from plasmacloud.cli.validate import emit

    args = ["--wait", str(wait), *(a for check in only or [] for a in ("--check", check))]
    args += ["--json"] if as_json else []
    args += ["--junit", str(junit.resolve())] if junit else []
    args += ["--persistence"] if persistence else []
    rc = relayed(lab, ["lab", "validate", *args])
    if rc is not None:
        return rc
    t0 = time.monotonic()

    def waiting(said: str) -> None:
        if not as_json:
            console.print(f"[{time.monotonic() - t0:3.0f}s] not ready yet: {said}")

    results = call(lab.validate, wait, only, persistence, waiting, warn)
    return emit(results, as_json, junit, lab.root, envelope)  # saved there for the dashboard


def node_op(lab: LabSurface, node: str, op: str, sig: signal.Signals = signal.SIGKILL) -> None:
    """start, stop or kill (with ``sig``) one node."""
    if op == "kill":
        call(lab.kill_node, node, sig)
    else:
        call(lab.start_node if op == "start" else lab.stop_node, node)
    console.print(f"{node}: {op} done")


def logs(lab: LabSurface, node: str, service: str | None, lines: int, follow: bool) -> None:
    from plasmacloud.cli.tail import print_tail

    print_tail(call(lab.log_path, node, service, failure=EXIT_USAGE), lines, follow)


def ssh(lab: LabSurface, node: str, command: list[str] | None) -> None:
    """Replace this process with ``ssh`` into the node."""
    import os

    argv = call(lab.ssh_argv, node, command or [])
    os.execvp(argv[0], argv)


def down(lab: LabSurface, wipe: bool) -> None:
    console.print(call(lab.down, wipe))
