"""`plasma lab qemu ...` (and `plasma lab up --backend qemu`): the PXE-booted VM lab."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from plasmacloud.cli._common import NodeArg, console, err
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.layout import LAB_DIR_ENV
from plasmacloud.lab.qemu_layout import DEFAULT_MEMORY_MB, qemu_lab_dir

if TYPE_CHECKING:
    from plasmacloud.cluster.probe import ClusterView
    from plasmacloud.lab.qemu import QemuBackend
    from plasmacloud.provision.states import StateFile

app = typer.Typer(
    help="The QEMU lab: VMs that PXE-boot from the netboot server and get installed.",
    no_args_is_help=True,
)

DirOpt = Annotated[
    Path | None, typer.Option("--dir", help="lab directory (default: <lab dir>-qemu)")
]


def progress_table(backend: QemuBackend, data: StateFile, started: float) -> Table:
    """One row per node: VM, provisioning state, last step, error."""
    from plasmacloud.provision.states import State

    table = Table(title=f"qemu lab {backend.paths.root} ({backend.state.accel})")
    for col in ("node", "vm", "state", "last step", "error"):
        table.add_column(col)
    for node_id, st in data.nodes.items():
        vm = backend.node_status(node_id).services[0]
        colour = {State.FAILED: "red", State.INSTALLED: "green", State.JOINED: "green"}
        state = f"[{colour.get(st.state, 'yellow')}]{st.state}[/]"
        vm_txt = f"pid {vm.pid}" if vm.running else f"[red]{vm.note}[/red]"
        table.add_row(node_id, vm_txt, state, st.last_step or "-", (st.error or "")[:70])
    table.caption = f"{time.monotonic() - started:.0f} s"
    return table


def up(
    path: Path | None,
    nodes: list[str] | None = None,
    memory: int = DEFAULT_MEMORY_MB,
    timeout: float = 1200.0,
    check: bool = False,
    services: list[str] | None = None,
    junit: Path | None = None,
    persistence: bool = False,
) -> int:
    """Bring the lab up and show each node's provisioning live until all are installed;
    ``check``: then validate (``junit``, ``persistence`` as `plasma lab qemu validate`)."""
    from rich.live import Live

    from plasmacloud.lab.qemu import QemuBackend
    from plasmacloud.lab.qemu_bringup import follow_installs

    try:
        backend = QemuBackend(qemu_lab_dir(path), nodes=nodes, memory_mb=memory, services=services)
    except KeyError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return EXIT_USAGE
    started = time.monotonic()
    try:
        console.print("building/reusing the netboot image and the lab network...")
        backend.up()
        console.print(f"image {backend.state.image_key} in {backend.state.timings['image_s']} s")
    except (LabError, OSError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        return EXIT_FAILURE
    wanted = nodes or list(backend.provisioning().nodes)
    deadline = started + timeout
    with Live(console=console, refresh_per_second=2) as live:

        def show(data: StateFile) -> None:
            live.update(progress_table(backend, data, started))

        installed, states = follow_installs(backend, wanted, deadline, show)
        if not installed:
            err.print(f"not installed: {states}; `plasma lab qemu logs NODE` for the console")
            return EXIT_UNAVAILABLE
    elapsed = time.monotonic() - started
    console.print(f"all installed in {elapsed:.0f} s; SSH: plasma lab qemu ssh node01")
    if not check:
        if not backend.runs_iam():
            return 0
        # the admin `plasma lab env` exports: needs the cluster formed, so it may wait
        return bootstrap(path, wait=max(60.0, deadline - time.monotonic()))
    rc = validate(
        path,
        wait=max(60.0, deadline - time.monotonic()),
        junit=junit,
        persistence=persistence,
    )
    console.print(f"up + validate: {time.monotonic() - started:.0f} s")
    return rc


@app.command("up")
def up_cmd(
    path: DirOpt = None,
    node: Annotated[list[str] | None, typer.Option(help="only these nodes")] = None,
    memory: Annotated[int, typer.Option(help="MiB per VM")] = DEFAULT_MEMORY_MB,
    timeout: Annotated[float, typer.Option(help="seconds to wait for every install")] = 1200,
    check: Annotated[bool, typer.Option("--validate", help="then run the checklist")] = False,
    service: Annotated[
        list[str] | None, typer.Option(help="services the VMs run (default: all the lab's)")
    ] = None,
) -> None:
    """Build the image, create the lab network, PXE-boot the VMs, follow their installs."""
    raise typer.Exit(up(path, node, memory, timeout, check, service))


def down(path: Path | None, wipe: bool = False) -> int:
    """Stop the VMs and the lab network; ``wipe``: also delete disks, tree, admin, state."""
    from plasmacloud.lab.qemu import QemuBackend

    backend = QemuBackend(qemu_lab_dir(path))
    try:
        backend.down()
        if wipe:
            backend.wipe()
    except (LabError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        return EXIT_FAILURE
    done = f"down, namespace {backend.names.namespace} gone" + (", wiped" if wipe else "")
    console.print(f"qemu lab {backend.paths.root}: {done}")
    return EXIT_OK


@app.command("down")
def down_cmd(
    path: DirOpt = None,
    wipe: Annotated[bool, typer.Option("--wipe", help="also delete disks, configs, PKI")] = False,
) -> None:
    """Power off every VM, stop dnsmasq/netboot/switch, delete the lab namespace."""
    raise typer.Exit(down(path, wipe))


def cluster_table(view: ClusterView) -> Table:
    """Nodes x (health per service, members, leader, term) as the probe saw them."""
    table = Table(title="cluster (probed inside the lab namespace)")
    for col in ("node", "health", "members", "leader", "term"):
        table.add_column(col)
    names = {v.member_id: v.node_id for v in view.nodes if v.member_id}
    for v in view.nodes:
        health = ", ".join(
            f"{s} [green]ok[/green]" if ok else f"{s} [red]{d[:50]}[/red]"
            for s, (ok, d) in v.health.items()
        )
        leader = names.get(v.leader_id or 0, "-") if v.leader_id else "[red]none[/red]"
        members = (v.error and f"[red]{v.error[:50]}[/red]") or str(len(v.members))
        table.add_row(v.node_id, health, members, leader, str(v.raft_term or "-"))
    agreed = view.leader_node
    table.caption = f"leader agreed: {agreed}" if agreed else "[red]no agreed leader[/red]"
    return table


def status(path: Path | None, inside: bool = False, as_json: bool = False) -> int:
    """VMs and provisioning from the state files, then the cluster as probed from inside
    the lab namespace; EXIT_OK only when the cluster is ready."""
    import asyncio

    from plasmacloud.cluster.probe import probe_cluster
    from plasmacloud.lab.qemu import QemuBackend
    from plasmacloud.lab.qemu_bringup import mark_joined

    backend = QemuBackend(qemu_lab_dir(path))
    if not inside:
        return run_inside(backend, "status", *(["--json"] if as_json else []))
    configs, tls, services = backend.validation_target()
    view = asyncio.run(probe_cluster(configs, services, tls))
    mark_joined(backend, view, _warn)
    data = backend.provisioning()
    if as_json:
        doc = {
            "dir": str(backend.paths.root),
            "backend": "qemu",
            "accel": backend.state.accel,
            "ready": view.ready,
            "leader": view.leader_node,
            "nodes": [
                {
                    "node": v.node_id,
                    "vm": backend.node_status(v.node_id).running,
                    "provisioning": data.nodes[v.node_id].state
                    if v.node_id in data.nodes
                    else None,
                    **v.as_json(),
                }
                for v in view.nodes
            ],
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        console.print(progress_table(backend, data, time.monotonic()))
        console.print(cluster_table(view))
    return EXIT_OK if view.ready else EXIT_UNAVAILABLE


@app.command("status")
def status_cmd(
    path: DirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    inside: Annotated[bool, typer.Option(hidden=True, help="already in the namespace")] = False,
) -> None:
    """Each node's VM and provisioning state, and the cluster's health, members, leader."""
    raise typer.Exit(status(path, inside, as_json))


def env_lines(path: Path | None) -> list[str]:
    """Shell exports for clients of the VMs' cluster. Its addresses exist only in the lab
    namespace, so the clients must run there (``ip netns exec $PLASMA_LAB_NETNS ...``)."""
    from plasmacloud.cluster.services import flaredb_url, iam_base_url
    from plasmacloud.iam.credentials import AdminCredentials
    from plasmacloud.lab.qemu import QemuBackend

    backend = QemuBackend(qemu_lab_dir(path))
    configs, tls, services = backend.validation_target()
    ns = backend.names.namespace
    lines = [
        f"# the lab's addresses exist only in its namespace: ip netns exec {ns} etcdctl ...",
        f"export PLASMA_LAB_NETNS={ns}",
        "export ETCDCTL_API=3",
    ]
    endpoints = [f"https://{c.ip}:{c.ports.chainfire_client}" for c in configs]
    if not tls.enabled:
        endpoints = [e.replace("https://", "http://") for e in endpoints]
    lines.append(f"export ETCDCTL_ENDPOINTS={','.join(endpoints)}")
    if tls.enabled:
        for var, f in (("CACERT", tls.ca_file), ("CERT", tls.cert_file), ("KEY", tls.key_file)):
            lines += [f"export ETCDCTL_{var}={f}", f"export PLASMA_{var}={f}"]
    names = {s.name for s in services}
    if "flaredb" in names:
        urls = [flaredb_url(c) for c in configs]
        lines += [f"export FLAREDB_URL={urls[0]}", f"export FLAREDB_URLS={','.join(urls)}"]
    if "iam" in names:
        urls = [iam_base_url(c) for c in configs]
        lines += [f"export IAM_URL={urls[0]}", f"export IAM_URLS={','.join(urls)}"]
        if tls.enabled:
            lines.append(f"export IAM_CACERT={tls.ca_file}")
        if backend.paths.admin.exists():
            lines.append(f"export PLASMA_ADMIN_CREDENTIALS={backend.paths.admin}")
            if tls.enabled:  # auth is on only with TLS, as in the process lab
                creds = AdminCredentials.read(backend.paths.admin)
                user = shlex.quote(f"{creds.username}:{creds.password}")
                lines.append(f"export ETCDCTL_USER={user}")
    lines.append(f"export {LAB_DIR_ENV}={backend.paths.root}")
    return lines


@app.command("env")
def env_cmd(path: DirOpt = None) -> None:
    """Shell exports for etcdctl/curl against the VMs (run them in the lab namespace)."""
    typer.echo("\n".join(env_lines(path)))


def logs(path: Path | None, node: str, lines: int = 60, follow: bool = False) -> int:
    """Print the end of the node's serial console (kernel, installer, agent and, once
    installed, every service's log), optionally following it."""
    from plasmacloud.cli.tail import print_tail
    from plasmacloud.lab.qemu import QemuBackend

    serial = QemuBackend(qemu_lab_dir(path)).paths.serial(node)
    if not serial.exists():
        err.print(f"no console log {serial}")
        return EXIT_USAGE
    print_tail(serial, lines, follow)
    return EXIT_OK


@app.command("logs")
def logs_cmd(
    node: NodeArg,
    path: DirOpt = None,
    lines: Annotated[int, typer.Option("--lines", "-n")] = 60,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
) -> None:
    """The node's serial console (kernel, installer and agent output, service logs)."""
    raise typer.Exit(logs(path, node, lines, follow))


def ssh(path: Path | None, node: str, command: list[str] | None) -> int:
    """Replace this process with ``ssh`` into the node (127.0.0.1:220N, the lab's key);
    the exit code when that is not possible."""
    from plasmacloud.lab.qemu import QemuBackend, vm_ssh_options
    from plasmacloud.provision.spec import SSHTarget

    backend = QemuBackend(qemu_lab_dir(path))
    vm = next((v for v in backend.state.vms if v.node_id == node), None)
    if vm is None or vm.ssh_port is None:
        err.print(f"{node} is not running with an SSH forward")
        return EXIT_USAGE
    options = vm_ssh_options(backend)
    argv = [*options.argv(SSHTarget(host="127.0.0.1", port=vm.ssh_port)), *(command or [])]
    os.execvp(argv[0], argv)


@app.command("ssh")
def ssh_cmd(
    node: NodeArg,
    path: DirOpt = None,
    command: Annotated[list[str] | None, typer.Argument(help="command to run")] = None,
) -> None:
    """SSH into the node (127.0.0.1:220N) with the lab's key."""
    raise typer.Exit(ssh(path, node, command))


def power(path: Path | None, node: str, action: str) -> int:
    """on (PXE boot), off (QMP quit), reset (QMP), cut (SIGKILL QEMU); the exit code."""
    from plasmacloud.lab.qemu import QemuBackend

    backend = QemuBackend(qemu_lab_dir(path))
    ops = {
        "on": backend.start_node,
        "off": backend.stop_node,
        "reset": backend.reset_node,
        "cut": backend.kill_node,
    }
    if action not in ops:
        err.print(f"unknown action {action!r}; one of {', '.join(ops)}")
        return EXIT_USAGE
    try:
        ops[action](node)
    except KeyError as exc:
        err.print(f"[red]error:[/red] no node {exc}")
        return EXIT_USAGE
    except (LabError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        return EXIT_FAILURE
    console.print(f"{node}: {action} done")
    return EXIT_OK


@app.command("power")
def power_cmd(
    node: NodeArg,
    action: Annotated[str, typer.Argument(help="on | off | reset | cut")],
    path: DirOpt = None,
) -> None:
    """Power control: on (PXE boot), off (QMP quit), reset (QMP), cut (SIGKILL QEMU)."""
    raise typer.Exit(power(path, node, action))


def run_inside(backend: QemuBackend, command: str, *args: str) -> int:
    """Run ``plasma lab qemu COMMAND --inside`` in the lab namespace (the host has no
    route to 192.168.100.0/24); its exit code."""
    from plasmacloud.lab.services import plasma_executable

    argv = [plasma_executable(), "lab", "qemu", command, "--dir", str(backend.paths.root)]
    argv += [*args, "--inside"]
    return subprocess.run(backend.in_namespace(argv), check=False).returncode


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")


def validate(
    path: Path | None,
    inside: bool = False,
    wait: float = 0.0,
    only: list[str] | None = None,
    as_json: bool = False,
    junit: Path | None = None,
    persistence: bool = False,
) -> int:
    """The S6 checklist against the VMs, run inside the lab namespace, repeated for up to
    ``wait`` s until green; ``only``: run just these check ids. With IAM, its first admin
    is bootstrapped first (once) for the token checks. ``persistence``: then, once, write
    markers, hard-reset every VM and read them back (several minutes under TCG)."""
    import asyncio

    from plasmacloud.lab.qemu import QemuBackend
    from plasmacloud.lab.qemu_bringup import validate_until_green
    from plasmacloud.validate.report import exit_code, report_json, report_junit, report_table

    backend = QemuBackend(qemu_lab_dir(path))
    if not inside:
        args = ["--wait", str(wait), *(a for check in only or [] for a in ("--check", check))]
        args += ["--json"] if as_json else []
        args += ["--junit", str(junit.resolve())] if junit else []
        args += ["--persistence"] if persistence else []
        return run_inside(backend, "validate", *args)

    def waiting(said: str) -> None:
        if not as_json:
            console.print(f"[{time.monotonic() - t0:3.0f}s] not ready yet: {said}")

    t0 = time.monotonic()
    results = asyncio.run(validate_until_green(backend, wait, only, persistence, waiting, _warn))
    if junit is not None:
        junit.write_text(report_junit(results))
    if as_json:
        typer.echo(json.dumps(report_json(results), indent=2))
    else:
        console.print(report_table(results, title=f"qemu lab {backend.paths.root}"))
        console.print(f"validated in {time.monotonic() - t0:.0f} s (including the wait for ready)")
    return exit_code(results)


def bootstrap(path: Path | None, inside: bool = False, wait: float = 0.0) -> int:
    """Create IAM's first admin (``<lab>/admin.json``, 0600) once Chainfire has formed,
    trying for up to ``wait`` s; run inside the lab namespace."""
    from plasmacloud.lab.qemu import QemuBackend
    from plasmacloud.lab.qemu_bringup import bootstrap_admin_within

    backend = QemuBackend(qemu_lab_dir(path))
    if not inside:
        return run_inside(backend, "bootstrap-iam", "--wait", str(wait))
    admin = bootstrap_admin_within(backend, wait, _warn)
    if admin is None:
        err.print(f"IAM bootstrap: Chainfire not ready after {wait:.0f} s")
        return EXIT_UNAVAILABLE
    console.print(f"IAM admin {admin.username!r}: {backend.paths.admin}")
    return EXIT_OK


@app.command("bootstrap-iam")
def bootstrap_cmd(
    path: DirOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the cluster")] = 120.0,
    inside: Annotated[bool, typer.Option(hidden=True, help="already in the namespace")] = False,
) -> None:
    """Create IAM's first admin in the VMs' cluster (idempotent; `lab up` does it)."""
    raise typer.Exit(bootstrap(path, inside, wait))


@app.command("validate")
def validate_cmd(
    path: DirOpt = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for a ready cluster")] = 0.0,
    check: Annotated[list[str] | None, typer.Option(help="only this check id (repeatable)")] = None,
    inside: Annotated[bool, typer.Option(hidden=True, help="already in the namespace")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    junit: Annotated[Path | None, typer.Option(help="also write JUnit XML here")] = None,
    persistence: Annotated[
        bool, typer.Option(help="then hard-reset every VM and check every marker is back")
    ] = False,
) -> None:
    """Run the cluster checklist against the VMs (from inside the lab namespace)."""
    raise typer.Exit(validate(path, inside, wait, check, as_json, junit, persistence))
