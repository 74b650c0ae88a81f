"""`plasma lab ...`: rehearse the cluster on this machine (up, status, env, logs, down)."""

from __future__ import annotations

import json
import shlex
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from plasmacloud.cli import lab_chaos, lab_members, lab_qemu
from plasmacloud.cli._common import DirOpt, JsonOpt, NodeArg, console, err, fail, open_lab
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.layout import LAB_DIR_ENV
from plasmacloud.lab.qemu_layout import existing_qemu_lab

if TYPE_CHECKING:
    from plasmacloud.cluster.probe import ClusterView
    from plasmacloud.flaredb.probe import FlareNodeView
    from plasmacloud.lab.control import Lab

app = typer.Typer(
    help="Rehearse a cluster on this machine: up, status, env, validate, down.",
    no_args_is_help=True,
)


def _view_table(lab: Lab, view: ClusterView) -> Table:
    """Nodes x (address, processes, health per service, members, leader, term)."""
    table = Table(title=f"lab {lab.layout.root}")
    for col in ("node", "address", "processes", "health", "members", "leader", "term"):
        table.add_column(col)
    names = {v.member_id: v.node_id for v in view.nodes if v.member_id}
    backend = lab.backend
    for v in view.nodes:
        procs = backend.node_status(v.node_id).services
        proc_txt = ", ".join(
            f"{p.service} {p.pid}" if p.running else f"{p.service} [red]{p.note}[/red]"
            for p in procs
        )
        health = ", ".join(
            f"{s} [green]ok[/green]" if ok else f"{s} [red]{d[:60]}[/red]"
            for s, (ok, d) in v.health.items()
        )
        leader = names.get(v.leader_id or 0, "-") if v.leader_id else "[red]none[/red]"
        table.add_row(
            v.node_id,
            str(lab.spec.ip_of(v.node_id)),
            proc_txt,
            health,
            (v.error and f"[red]{v.error[:60]}[/red]") or str(len(v.members)),
            leader,
            str(v.raft_term or "-"),
        )
    agreed = view.leader_node
    table.caption = f"leader agreed: {agreed}" if agreed else "[red]no agreed leader[/red]"
    return table


def _view_json(lab: Lab, view: ClusterView) -> dict[str, Any]:
    backend = lab.backend
    return {
        "dir": str(lab.layout.root),
        "backend": lab.state.backend,
        "ready": view.ready,
        "leader": view.leader_node,
        "nodes": [
            {
                "node": v.node_id,
                "ip": str(lab.spec.ip_of(v.node_id)),
                "processes": [
                    {"service": p.service, "running": p.running, "pid": p.pid, "note": p.note}
                    for p in backend.node_status(v.node_id).services
                ],
                **v.as_json(),
            }
            for v in view.nodes
        ],
    }


def _iam_env_lines(lab: Lab, secrets: bool) -> list[str]:
    """IAM's URLs, CA and the bootstrap admin (as etcdctl's user when ``secrets``)."""
    from plasmacloud.cluster.services import iam_base_url
    from plasmacloud.iam.credentials import AdminCredentials

    urls = [iam_base_url(cfg) for cfg in lab.configs()]
    lines = [f"export IAM_URL={urls[0]}", f"export IAM_URLS={','.join(urls)}"]
    if lab.spec.tls:
        lines.append(f"export IAM_CACERT={lab.layout.ca_file}")
    creds_path = lab.layout.admin_credentials
    if creds_path.exists():
        lines.append(f"export PLASMA_ADMIN_CREDENTIALS={creds_path}")
        if secrets and lab.spec.tls:  # auth is on only with TLS (lab.services.with_auth)
            # etcdctl 3.4 reads ETCDCTL_USER as --user: it logs in through Auth.Authenticate
            creds = AdminCredentials.read(creds_path)
            user = shlex.quote(f"{creds.username}:{creds.password}")
            lines.append(f"export ETCDCTL_USER={user}")
    return lines


def _env_lines(lab: Lab, secrets: bool = True) -> list[str]:
    from plasmacloud.cluster.services import FLAREDB, flaredb_url, runs_iam

    lines = [
        "export ETCDCTL_API=3",
        f"export ETCDCTL_ENDPOINTS={','.join(lab.spec.client_endpoints())}",
    ]
    if lab.spec.tls:
        lines += [
            f"export ETCDCTL_CACERT={lab.layout.ca_file}",
            f"export ETCDCTL_CERT={lab.layout.operator_cert}",
            f"export ETCDCTL_KEY={lab.layout.operator_key}",
        ]
    if any(s.name == FLAREDB.name for s in lab.services):
        urls = [flaredb_url(cfg) for cfg in lab.configs()]
        lines += [f"export FLAREDB_URL={urls[0]}", f"export FLAREDB_URLS={','.join(urls)}"]
    if lab.spec.tls:
        # curl --cacert "$PLASMA_CACERT" --cert "$PLASMA_CERT" --key "$PLASMA_KEY"; plasma sql
        lines += [
            f"export PLASMA_CACERT={lab.layout.ca_file}",
            f"export PLASMA_CERT={lab.layout.operator_cert}",
            f"export PLASMA_KEY={lab.layout.operator_key}",
        ]
    if runs_iam(lab.services):
        lines += _iam_env_lines(lab, secrets)
    lines.append(f"export {LAB_DIR_ENV}={lab.layout.root}")
    return lines


def _where(lab: Lab) -> Table:
    table = Table(title="where everything is", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("where")
    table.add_row("lab dir", str(lab.layout.root))
    table.add_row("client endpoints", ", ".join(lab.spec.client_endpoints()))
    for cfg in lab.configs():
        urls = [s.health_url(cfg) for s in lab.services]
        table.add_row(f"{cfg.node_id} health", ", ".join(urls))
        logs = [str(lab.layout.log_path(cfg.node_id, s.name)) for s in lab.services]
        table.add_row(f"{cfg.node_id} logs", ", ".join(logs))
        table.add_row(f"{cfg.node_id} config", str(lab.layout.config_path(cfg.node_id)))
    if lab.spec.tls:
        table.add_row("CA / operator cert", f"{lab.layout.ca_file}, {lab.layout.operator_cert}")
    if lab.layout.admin_credentials.exists():
        table.add_row("IAM admin (0600)", str(lab.layout.admin_credentials))
    table.add_row("use it", 'eval "$(plasma lab env)"; etcdctl member list')
    return table


JunitOpt = Annotated[
    Path | None, typer.Option("--junit", help="also write the checklist as JUnit XML here")
]


PersistenceOpt = Annotated[
    bool,
    typer.Option(
        "--persistence",
        help="also write markers, restart every node's services (a qemu lab: hard-reset "
        "every VM) and check the markers are back",
    ),
]


def _validate(lab: Lab, as_json: bool, junit: Path | None = None, persistence: bool = False) -> int:
    import asyncio

    from plasmacloud.cli.validate import emit
    from plasmacloud.lab.target import lab_target
    from plasmacloud.validate.checks import run_checks

    results = asyncio.run(run_checks(lab_target(lab), persistence=persistence))
    return emit(results, as_json, junit)


def _log_tails(lab: Lab, lines: int = 8) -> None:
    for node_id in lab.spec.node_ids:
        for svc in lab.services:
            path = lab.layout.log_path(node_id, svc.name)
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                err.print(f"[bold]--- {path}[/bold]")
                err.print("\n".join(tail), markup=False, highlight=False)


def _bootstrap_iam(lab: Lab) -> None:
    """Create IAM's first admin once the cluster is up, unless waiting for it did
    (idempotent); warn if its file is lost."""
    import asyncio

    from plasmacloud.iam.bootstrap import Outcome

    try:
        outcome = lab.iam_bootstrap or asyncio.run(lab.bootstrap_iam())
    except Exception as exc:  # gRPC errors share no base class worth naming here
        raise fail(LabError(f"IAM bootstrap failed: {exc}"), EXIT_UNAVAILABLE) from exc
    if outcome == Outcome.LOST:
        err.print(
            f"[yellow]warning:[/yellow] IAM was bootstrapped before but "
            f"{lab.layout.admin_credentials} is gone; `plasma lab up --wipe` starts afresh"
        )


@app.command()
def up(
    lab_dir: DirOpt = None,
    backend: Annotated[
        str,
        typer.Option(
            help="process (127.x addresses), netns (a namespace per node) or qemu (VMs that "
            "PXE-boot and install; `plasma lab qemu --help` for its own options)"
        ),
    ] = "process",
    wipe: Annotated[bool, typer.Option("--wipe", help="delete old data, configs, PKI")] = False,
    validate: Annotated[bool, typer.Option("--validate", help="run the checklist once up")] = False,
    junit: JunitOpt = None,
    persistence: PersistenceOpt = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="seconds to wait for a healthy cluster (default 60; qemu: for every "
            "install, default 1200)",
            show_default=False,
        ),
    ] = None,
    scratch: Annotated[
        bool,
        typer.Option(
            "--scratch",
            help="a new lab picks a random free address range (process: 127.x.y.11-13, "
            "netns: 10.x.y.0/24) instead of the default, so it runs beside other labs; "
            "kept in its lab.json for later commands",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate certs and configs, start every node, wait for health and a leader."""
    import asyncio

    from rich.console import Group
    from rich.live import Live

    from plasmacloud.cluster.probe import describe
    from plasmacloud.lab.spec import busy_ports

    for flag, given in (("--junit", junit is not None), ("--persistence", persistence)):
        if given and not validate:
            raise fail(LabError(f"{flag} is part of the checklist: add --validate"), EXIT_USAGE)
    if backend == "qemu":  # PXE-booted VMs: see `plasma lab qemu --help`
        flags = (wipe, validate, junit, persistence, timeout, scratch, as_json)
        raise typer.Exit(_qemu_up(lab_dir, *flags))
    timeout = 60.0 if timeout is None else timeout
    lab = open_lab(lab_dir, backend, scratch)
    try:
        if wipe:
            lab.down(wipe=True)
            lab = open_lab(lab_dir, backend, scratch)
        if not lab.running() and (busy := busy_ports(lab.spec)):
            raise LabError(
                f"addresses already in use: {', '.join(busy)} (another lab? "
                "`plasma lab status --dir ...` or use another --dir)"
            )
        lab.up()
    except (LabError, OSError) as exc:
        raise fail(exc) from exc
    try:
        if as_json:
            view = asyncio.run(lab.wait_ready(timeout=timeout))
        else:
            with Live(console=console, transient=False, refresh_per_second=4) as live:

                def show(v: ClusterView) -> None:
                    live.update(Group(_view_table(lab, v), f"waiting: {describe(v)}"))

                view = asyncio.run(lab.wait_ready(timeout=timeout, on_view=show))
                live.update(_view_table(lab, view))
    except LabError as exc:
        _log_tails(lab)
        raise fail(exc, EXIT_UNAVAILABLE) from exc
    _bootstrap_iam(lab)
    if as_json:
        # the admin's password stays out of this output (`plasma lab env` has it)
        env_lines = _env_lines(lab, secrets=False)
        typer.echo(json.dumps({**_view_json(lab, view), "env": env_lines}, indent=2))
    else:
        console.print()
        console.print(_where(lab))
    if validate:
        raise typer.Exit(_validate(lab, as_json, junit, persistence))


def _qemu_up(
    lab_dir: Path | None,
    wipe: bool,
    validate: bool,
    junit: Path | None,
    persistence: bool,
    timeout: float | None,
    scratch: bool,
    as_json: bool,
) -> int:
    """`lab up --backend qemu`: every flag of `lab up` is honoured or refused by name
    (--wipe, --validate with --junit/--persistence, --timeout for the installs)."""
    refused = {
        "--scratch": (scratch, "the QEMU lab always uses its own namespace and 192.168.100.0/24"),
        "--json": (
            as_json,
            "its bring-up is a live install table; once up, `plasma lab status --json` and "
            "`plasma lab qemu validate --json` report it as JSON",
        ),
    }
    for flag, (given, why) in refused.items():
        if given:
            raise fail(LabError(f"{flag} with --backend qemu: {why}"), EXIT_USAGE)
    if wipe:
        rc = lab_qemu.down(lab_dir, wipe=True)
        if rc != EXIT_OK:
            return rc
    return lab_qemu.up(
        lab_dir, timeout=timeout or 1200.0, check=validate, junit=junit, persistence=persistence
    )


@app.command()
def status(lab_dir: DirOpt = None, as_json: JsonOpt = False) -> None:
    """Members, leader agreement, health per node and service, processes."""
    import asyncio

    from plasmacloud.cluster.probe import describe
    from plasmacloud.cluster.services import FLAREDB
    from plasmacloud.flaredb.probe import agreed_leader, probe_flaredb

    if (qemu := existing_qemu_lab(lab_dir)) is not None:
        raise typer.Exit(lab_qemu.status(qemu, as_json=as_json))
    lab = open_lab(lab_dir)
    if not lab.layout.state_path.exists():
        raise fail(LabError(f"no lab in {lab.layout.root}; `plasma lab up` first"), EXIT_USAGE)
    view = asyncio.run(lab.probe())
    flare = (
        asyncio.run(probe_flaredb(lab.configs(), lab.operator_tls))
        if any(s.name == FLAREDB.name for s in lab.services)
        else None
    )
    if as_json:
        doc = _view_json(lab, view)
        if flare is not None:
            doc["flaredb"] = {
                "leader": agreed_leader(flare),
                "nodes": [v.to_json() for v in flare],
            }
        typer.echo(json.dumps(doc, indent=2))
    else:
        console.print(_view_table(lab, view))
        if flare is not None:
            console.print(_flaredb_table(flare))
        if not view.ready:
            console.print(f"[yellow]not ready:[/yellow] {describe(view)}")
    raise typer.Exit(EXIT_OK if view.ready else EXIT_UNAVAILABLE)


def _flaredb_table(views: list[FlareNodeView]) -> Table:
    """FlareDB per node: the leader it names, members listed/reachable, applied index."""
    from plasmacloud.flaredb.probe import agreed_leader

    table = Table(title="FlareDB")
    for col in ("node", "leader", "members (reachable)", "applied index"):
        table.add_column(col)
    for v in views:
        if v.error:
            table.add_row(v.node_id, f"[red]{v.error[:60]}[/red]", "-", "-")
            continue
        table.add_row(
            v.node_id,
            v.leader or "[red]none[/red]",
            f"{v.members} ({v.reachable})",
            str(v.applied_index),
        )
    agreed = agreed_leader(views)
    table.caption = f"leader agreed: {agreed}" if agreed else "[red]no agreed leader[/red]"
    return table


@app.command()
def env(lab_dir: DirOpt = None) -> None:
    """Print shell exports for etcdctl: `eval "$(plasma lab env)"; etcdctl member list`."""
    if (qemu := existing_qemu_lab(lab_dir)) is not None:
        typer.echo("\n".join(lab_qemu.env_lines(qemu)))
        return
    typer.echo("\n".join(_env_lines(open_lab(lab_dir))))


@app.command("validate")
def validate_cmd(
    lab_dir: DirOpt = None,
    as_json: JsonOpt = False,
    junit: JunitOpt = None,
    persistence: PersistenceOpt = False,
) -> None:
    """Run the cluster checklist against the running lab (non-zero exit on any failure)."""
    if (qemu := existing_qemu_lab(lab_dir)) is not None:
        raise typer.Exit(
            lab_qemu.validate(qemu, as_json=as_json, junit=junit, persistence=persistence)
        )
    lab = open_lab(lab_dir)
    raise typer.Exit(_validate(lab, as_json, junit, persistence))


@app.command()
def logs(
    node: NodeArg,
    lab_dir: DirOpt = None,
    service: Annotated[str, typer.Option(help="which service's log")] = "chainfire",
    lines: Annotated[int, typer.Option("--lines", "-n", help="lines to show")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
) -> None:
    """Show a node's service log (optionally follow it like tail -f); in a qemu lab the
    node's serial console, which carries every service's log."""
    if (qemu := existing_qemu_lab(lab_dir)) is not None:
        raise typer.Exit(lab_qemu.logs(qemu, node, lines, follow))
    lab = open_lab(lab_dir)
    if node not in lab.spec.node_ids:
        raise fail(LabError(f"no node {node!r} (nodes: {', '.join(lab.spec.node_ids)})"), 2)
    path = lab.layout.log_path(node, service)
    if not path.exists():
        raise fail(LabError(f"{path} does not exist (services: {lab.state.services})"), 2)
    from plasmacloud.cli.tail import print_tail

    print_tail(path, lines, follow)


@app.command("ssh")
def ssh_cmd(
    node: NodeArg,
    lab_dir: DirOpt = None,
    command: Annotated[list[str] | None, typer.Argument(help="command to run")] = None,
) -> None:
    """SSH into a qemu lab's VM with the lab's key (process and netns nodes are local
    processes: `plasma lab logs`, or `ip netns exec` for a netns node)."""
    if (qemu := existing_qemu_lab(lab_dir)) is None:
        raise fail(
            LabError(
                "`plasma lab ssh` needs a qemu lab (`plasma lab up --backend qemu`); the "
                "nodes of a process or netns lab are processes on this machine"
            ),
            EXIT_USAGE,
        )
    raise typer.Exit(lab_qemu.ssh(qemu, node, command))


def _node_op(lab_dir: Path | None, node: str, op: str, sig: signal.Signals | None = None) -> None:
    if (qemu := existing_qemu_lab(lab_dir)) is not None:
        # a VM's power: start = on (PXE boot), stop = off (QMP quit), kill = cut the power
        if op == "kill" and sig not in (None, signal.SIGKILL):
            raise fail(LabError("a qemu lab node can only be killed (power cut)"), EXIT_USAGE)
        raise typer.Exit(lab_qemu.power(qemu, node, {"start": "on", "stop": "off"}.get(op, "cut")))
    lab = open_lab(lab_dir)
    try:
        backend = lab.backend
        if op == "start":
            lab.prepare()
            backend.start_node(node)
        elif op == "stop":
            backend.stop_node(node)
        else:
            backend.kill_node(node, sig or signal.SIGKILL)
    except LabError as exc:
        raise fail(exc, EXIT_USAGE if "no node" in str(exc) else EXIT_FAILURE) from exc
    console.print(f"{node}: {op} done")


@app.command()
def start(node: NodeArg, lab_dir: DirOpt = None) -> None:
    """Start one node's services (after stop/kill)."""
    _node_op(lab_dir, node, "start")


@app.command()
def stop(node: NodeArg, lab_dir: DirOpt = None) -> None:
    """Stop one node gracefully (SIGTERM, SIGKILL after a grace period)."""
    _node_op(lab_dir, node, "stop")


@app.command()
def kill(
    node: NodeArg,
    lab_dir: DirOpt = None,
    sig: Annotated[str, typer.Option("--signal", "-s", help="KILL, TERM, STOP, CONT...")] = "KILL",
) -> None:
    """Send a signal to one node's services (default SIGKILL: a crash)."""
    try:
        parsed = signal.Signals[f"SIG{sig.upper().removeprefix('SIG')}"]
    except KeyError as exc:
        raise fail(LabError(f"unknown signal {sig!r}"), EXIT_USAGE) from exc
    _node_op(lab_dir, node, "kill", parsed)


@app.command()
def down(
    lab_dir: DirOpt = None,
    wipe: Annotated[bool, typer.Option("--wipe", help="also delete data, configs, PKI")] = False,
) -> None:
    """Stop exactly the processes this lab started (data kept unless --wipe)."""
    if (qemu := existing_qemu_lab(lab_dir)) is not None:
        raise typer.Exit(lab_qemu.down(qemu, wipe))
    lab = open_lab(lab_dir)
    try:
        n = len(lab.state.processes)
        lab.down(wipe=wipe)
    except LabError as exc:
        raise fail(exc) from exc
    console.print(f"lab {lab.layout.root}: stopped {n} process(es){', wiped' if wipe else ''}")


@app.command()
def restore(
    backup: Annotated[Path, typer.Argument(help="a `plasma cluster backup` directory")],
    lab_dir: DirOpt = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for a healthy cluster")] = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Replace the lab's whole state with a backup's: every key, row, user, policy and
    signing key (the backup is checked before anything stops)."""
    import asyncio

    from plasmacloud.cluster.backup import BackupError
    from plasmacloud.lab.restore import restore_lab

    lab = open_lab(lab_dir)

    def progress(step: str) -> None:
        if not as_json:
            err.print(f"[dim]restore:[/dim] {step}")

    try:
        done = asyncio.run(restore_lab(lab, backup, timeout, progress))
    except BackupError as exc:
        raise fail(exc, EXIT_USAGE) from None
    except (LabError, TimeoutError) as exc:
        raise fail(exc) from None
    summary = {
        "backup": str(backup),
        "cluster": done.manifest.cluster,
        "created_at": done.manifest.created_at,
        "chainfire_revision": done.manifest.chainfire.detail["revision"],
        "iam_records": done.manifest.iam.detail["records"],
        "seconds": round(done.seconds, 1),
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        console.print(
            f"restored {lab.layout.root} from {backup} (taken {summary['created_at']}): "
            f"Chainfire at revision {summary['chainfire_revision']}, "
            f"{summary['iam_records']} IAM records, FlareDB loaded; down for {summary['seconds']} s"
        )


# the fault commands live in lab_chaos; registered here, after this group's own
app.command()(lab_chaos.partition)
app.command()(lab_chaos.heal)
app.command()(lab_chaos.chaos)
lab_qemu.app.command("chaos")(lab_chaos.qemu_chaos_cmd)
app.command("add-node")(lab_members.add_node)
app.command("remove-node")(lab_members.remove_node)
app.add_typer(lab_qemu.app, name="qemu")
