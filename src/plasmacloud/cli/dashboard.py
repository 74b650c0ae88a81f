"""`plasma dashboard`: serve the read-only web UI of a lab's or a provisioned cluster."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plasmacloud.cli._common import DirOpt, err, fail
from plasmacloud.cli.validate import DEFAULT_SERVICES, OutOpt, ServicesOpt
from plasmacloud.common.errors import EXIT_USAGE

if TYPE_CHECKING:
    from plasmacloud.dashboard.server import Sources

HostOpt = Annotated[
    str, typer.Option(help="address to listen on; anything but loopback is plain HTTP")
]
PortOpt = Annotated[int, typer.Option(help="port to listen on (0: a free one)")]
SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        "-s",
        help="a provisioned cluster's spec (with --out), instead of a lab",
        show_default=False,
    ),
]


def lab_sources(lab_dir: Path | None) -> Sources:
    """A process or netns lab: its cluster, PKI and saved runs. (A QEMU lab's addresses
    exist only inside its network namespace, where a browser does not run.)"""
    from plasmacloud.dashboard.server import Sources
    from plasmacloud.lab.backend import LabError
    from plasmacloud.lab.control import Lab
    from plasmacloud.lab.layout import default_lab_dir
    from plasmacloud.lab.qemu_layout import existing_qemu_lab
    from plasmacloud.lab.target import lab_target

    root = lab_dir or default_lab_dir()
    if (qemu := existing_qemu_lab(root)) is not None:
        raise fail(
            LabError(
                f"{qemu} is a QEMU lab: its VMs answer only inside the lab namespace. Its "
                f"provisioning, certificates and runs: `plasma dashboard --spec "
                f"{qemu}/cluster.yaml --out {qemu}/out`"
            ),
            EXIT_USAGE,
        )
    try:
        lab = Lab.open(root)
    except LabError as exc:
        raise fail(exc, EXIT_USAGE) from exc
    if not lab.layout.state_path.exists():
        raise fail(
            LabError(f"no process or netns lab in {lab.layout.root}; `plasma lab up` first"),
            EXIT_USAGE,
        )
    return Sources(
        target=lab_target(lab), cert_dirs=(lab.layout.pki_dir,), runs_dir=lab.layout.root
    )


def spec_sources(spec: Path, out: Path, services: str) -> Sources:
    """A provisioned cluster: the spec's nodes dialled with the render tree's operator
    certificate, the netboot server's state file, the tree's certificates and the
    findings preflight would report about them."""
    from plasmacloud.cli.validate import parse_services, spec_tls
    from plasmacloud.dashboard.server import Sources
    from plasmacloud.provision import certs
    from plasmacloud.provision.layout import OutputLayout
    from plasmacloud.provision.netboot import state_path
    from plasmacloud.provision.spec import SpecError, load_spec
    from plasmacloud.validate.spec_target import spec_target

    try:
        cluster = load_spec(spec)
        tls = spec_tls(out, None, None, None)
        chosen = parse_services(services)
    except (SpecError, KeyError, FileNotFoundError) as exc:
        raise fail(exc, EXIT_USAGE) from exc
    layout = OutputLayout(out)
    return Sources(
        target=spec_target(cluster, tls, chosen),
        cert_dirs=(layout.pki_dir, *(layout.secrets_dir(n.node_id) for n in cluster.nodes)),
        cert_findings=lambda: certs.check_cluster(cluster, layout),
        state_file=state_path(layout),
        runs_dir=layout.root,
    )


@contextlib.asynccontextmanager
async def serving(sources: Sources, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[None]:
    """The dashboard on ``host:port`` while the block runs; its one-time login URL is
    printed first (a typer.Exit for an address it cannot bind)."""
    from plasmacloud.dashboard.auth import Gate
    from plasmacloud.dashboard.server import bind, is_loopback, login_url, serve

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
) -> None:
    """A read-only web UI of a lab (--dir) or a provisioned cluster (--spec, --out).

    The first line printed is the one-time login URL (its token works once, as Jupyter's
    does); Ctrl-C stops it."""
    import asyncio

    sources = spec_sources(spec, out, services) if spec else lab_sources(lab_dir)

    async def run() -> None:
        async with serving(sources, host, port):
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is meant to stop
        asyncio.run(run())
