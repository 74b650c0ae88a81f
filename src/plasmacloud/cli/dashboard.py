"""`plasma dashboard`: serve the read-only web UI of a lab's cluster."""

from __future__ import annotations

from typing import Annotated

import typer

from plasmacloud.cli._common import DirOpt, err, fail, open_lab
from plasmacloud.common.errors import EXIT_USAGE

HostOpt = Annotated[
    str, typer.Option(help="address to listen on; anything but loopback is plain HTTP")
]
PortOpt = Annotated[int, typer.Option(help="port to listen on (0: a free one)")]


def dashboard(lab_dir: DirOpt = None, host: HostOpt = "127.0.0.1", port: PortOpt = 0) -> None:
    """Serve the dashboard: the first line printed is the one-time login URL (its token
    works once, as Jupyter's does); Ctrl-C stops it."""
    import asyncio
    import contextlib

    from plasmacloud.dashboard.auth import Gate
    from plasmacloud.dashboard.server import Sources, bind, is_loopback, login_url, serve
    from plasmacloud.lab.backend import LabError
    from plasmacloud.lab.target import lab_target

    lab = open_lab(lab_dir)
    if not lab.layout.state_path.exists():
        raise fail(LabError(f"no lab in {lab.layout.root}; `plasma lab up` first"), EXIT_USAGE)
    sources = Sources(target=lab_target(lab))
    gate = Gate()
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise fail(exc, EXIT_USAGE) from exc
    typer.echo(login_url(sock, gate))
    if not is_loopback(host):
        err.print(
            f"[yellow]warning:[/yellow] listening on {host}, not loopback: anyone who can "
            "reach it sees the login page, and traffic (the login URL too) is plain HTTP"
        )

    async def run() -> None:
        runner = await serve(sources, sock, gate)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
        asyncio.run(run())
