"""`plasma dashboard`: serve the read-only web UI of a lab's or a provisioned cluster."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plasmacloud.cli._common import DirOpt, err, fail, open_any_lab
from plasmacloud.cli.lab_run import InsideOpt, relayed
from plasmacloud.cli.validate import DEFAULT_SERVICES, OutOpt, ServicesOpt
from plasmacloud.common.errors import EXIT_USAGE

if TYPE_CHECKING:
    from plasmacloud.cluster.target import ClusterTarget
    from plasmacloud.dashboard.server import Sources
    from plasmacloud.lab.surface import LabSurface

HostOpt = Annotated[
    str, typer.Option(help="address to listen on; anything but loopback is plain HTTP")
]
PortOpt = Annotated[int, typer.Option(help="port to listen on (0: a free one)")]
# the dashboard's own default (dashboard.auth.DEFAULT_SESSION_S), not imported from there:
# `plasma --help` must not load the dashboard package
DEFAULT_SESSION_HOURS = 12.0
SessionOpt = Annotated[
    float,
    typer.Option("--session-hours", min=0.01, help="hours a login lasts unless logged out sooner"),
]
# set when `plasma dashboard --dir QEMU_LAB` re-ran itself in the lab namespace: the socket
# it bound in the host's, where the browser is
ListenFdOpt = Annotated[int | None, typer.Option("--listen-fd", hidden=True, help="serve here")]
SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        "-s",
        help="a provisioned cluster's spec (with --out), instead of a lab",
        show_default=False,
    ),
]


def lab_sources(lab: LabSurface) -> Sources:
    """A lab's cluster as the ``plasma lab`` commands reach it and its saved runs; with
    the render tree a QEMU lab's VMs were provisioned from (the netboot server's states,
    certificates, preflight's findings), or a process or netns lab's PKI."""
    from plasmacloud.dashboard.server import Sources
    from plasmacloud.lab.backend import LabError
    from plasmacloud.lab.layout import LabLayout

    if (tree := lab.render_tree) is not None:
        spec, out = tree
        return tree_sources(lab.target(), spec, out, runs_dir=lab.root)
    layout = LabLayout(lab.root)
    if not layout.state_path.exists():
        raise fail(LabError(f"no lab in {lab.root}; `plasma lab up` first"), EXIT_USAGE)
    return Sources(target=lab.target(), cert_dirs=(layout.pki_dir,), runs_dir=lab.root)


def spec_sources(spec: Path, out: Path, services: str) -> Sources:
    """A provisioned cluster: the spec's nodes dialled with the render tree's operator
    certificate, and the render tree's files (:func:`tree_sources`)."""
    from plasmacloud.cli.validate import parse_services, spec_tls
    from plasmacloud.provision.spec import SpecError, load_spec
    from plasmacloud.validate.spec_target import spec_target

    try:
        cluster = load_spec(spec)
        tls = spec_tls(out, None, None, None)
        chosen = parse_services(services)
    except (SpecError, KeyError, FileNotFoundError) as exc:
        raise fail(exc, EXIT_USAGE) from exc
    return tree_sources(spec_target(cluster, tls, chosen), spec, out, runs_dir=out)


def tree_sources(target: ClusterTarget, spec: Path, out: Path, runs_dir: Path) -> Sources:
    """``target`` with what a render tree holds about it: the netboot server's state file,
    the tree's certificates and the findings preflight would report about them."""
    from plasmacloud.dashboard.server import Sources
    from plasmacloud.provision import certs
    from plasmacloud.provision.layout import OutputLayout
    from plasmacloud.provision.netboot import state_path
    from plasmacloud.provision.spec import SpecError, load_spec

    try:
        cluster = load_spec(spec)
    except (SpecError, FileNotFoundError) as exc:
        raise fail(exc, EXIT_USAGE) from exc
    layout = OutputLayout(out)
    return Sources(
        target=target,
        cert_dirs=(layout.pki_dir, *(layout.secrets_dir(n.node_id) for n in cluster.nodes)),
        cert_findings=lambda: certs.check_cluster(cluster, layout),
        state_file=state_path(layout),
        runs_dir=runs_dir,
    )


def listening(host: str, port: int) -> socket.socket:
    """The dashboard's listening socket (a typer.Exit for an address it cannot bind)."""
    from plasmacloud.dashboard.server import bind

    try:
        return bind(host, port)
    except OSError as exc:
        raise fail(exc, EXIT_USAGE) from exc


@contextlib.asynccontextmanager
async def serving(
    sources: Sources,
    host: str = "127.0.0.1",
    port: int = 0,
    sock: socket.socket | None = None,
    session_s: float = DEFAULT_SESSION_HOURS * 3600,
) -> AsyncIterator[None]:
    """The dashboard on ``host:port`` (or on ``sock``, already listening) while the block
    runs, its logins lasting ``session_s``; its one-time login URL is printed first."""
    from plasmacloud.dashboard.auth import Gate
    from plasmacloud.dashboard.server import is_loopback, login_url, serve

    gate = Gate(session_s)
    sock = sock or listening(host, port)
    typer.echo(login_url(sock, gate))
    if not is_loopback(bound := sock.getsockname()[0]):
        err.print(
            f"[yellow]warning:[/yellow] listening on {bound}, not loopback: anyone who can "
            "reach it sees the login page, and traffic (the login URL too) is plain HTTP"
        )
    runner = await serve(sources, sock, gate)
    try:
        yield
    finally:
        await runner.cleanup()


def dashboard(
    lab_dir: DirOpt = None,
    spec: SpecOpt = None,
    out: OutOpt = Path("out"),
    services: ServicesOpt = DEFAULT_SERVICES,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 0,
    session_hours: SessionOpt = DEFAULT_SESSION_HOURS,
    inside: InsideOpt = False,
    listen_fd: ListenFdOpt = None,
) -> None:
    """A read-only web UI of a lab (--dir) or a provisioned cluster (--spec, --out).

    The first line printed is the one-time login URL (its token works once, as Jupyter's
    does); Ctrl-C stops it. A QEMU lab's dashboard runs inside the lab namespace, where
    its VMs answer, listening on a socket bound here, where the browser is."""
    import asyncio

    if spec:
        sources, sock = spec_sources(spec, out, services), listening(host, port)
    else:
        lab = open_any_lab(lab_dir, inside=inside)
        sock = listening(host, port) if listen_fd is None else socket.socket(fileno=listen_fd)
        fd = sock.fileno()
        try:
            argv = ["dashboard", "--listen-fd", str(fd), "--session-hours", str(session_hours)]
            rc = relayed(lab, argv, (fd,))
        except KeyboardInterrupt:  # the relayed dashboard got it too, and stopped
            return
        if rc is not None:
            raise typer.Exit(rc)
        sources = lab_sources(lab)

    async def run() -> None:
        async with serving(sources, sock=sock, session_s=session_hours * 3600):
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
        asyncio.run(run())
