"""`plasma cluster ...`: operate a running cluster (a lab's or real machines')."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from plasmacloud.cli._common import open_any_lab
from plasmacloud.cli.lab_run import InsideOpt, relayed
from plasmacloud.cli.validate import (
    DEFAULT_SERVICES,
    IdentityOpt,
    KnownHostsOpt,
    OutOpt,
    ServicesOpt,
    ssh_spec_target,
)
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_USAGE
from plasmacloud.lab.layout import LAB_DIR_ENV

if TYPE_CHECKING:  # the CLI starts without pydantic; commands import it when they run
    from collections.abc import Callable

    from plasmacloud.cluster.target import ClusterTarget
    from plasmacloud.common.config import TLSConfig
    from plasmacloud.lab.control import Lab
    from plasmacloud.lab.surface import LabSurface

app = typer.Typer(
    help="Operate a running cluster: backups, rolling restarts, membership, recovery.",
    no_args_is_help=True,
)
backup_app = typer.Typer(
    help="Back the cluster up (--out DIR), or check a backup (verify DIR).",
    invoke_without_command=True,
)
app.add_typer(backup_app, name="backup")


def _lab_dir(what: str) -> Any:
    """``--dir``: ``what`` (default: the lab $PLASMA_LAB_DIR names)."""
    return typer.Option(
        "--dir", envvar=LAB_DIR_ENV, help=f"{what} (default: ${LAB_DIR_ENV})", show_default=False
    )


def _instead_of_a_lab(what: str) -> Any:
    """``--config``: a real cluster's node config, ``what``."""
    return typer.Option("--config", help=f"instead of a lab: {what}", show_default=False)


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="a node's cluster-config.json (its certificate reads IAM's records); default: "
        "the first node of the lab $PLASMA_LAB_DIR names",
        show_default=False,
    ),
]


def _fail(message: object, code: int = EXIT_FAILURE) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _operator_tls(node_tls_enabled: bool) -> TLSConfig:
    """The operator's TLS files, from the variables etcdctl reads (`plasma lab env`
    exports them)."""
    from plasmacloud.common.config import TLSConfig

    if not node_tls_enabled:
        return TLSConfig(enabled=False)
    names = ("ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise _fail(
            f"{', '.join(missing)} not set: export the operator's CA, certificate and key "
            '(or `eval "$(plasma lab env)"`)',
            EXIT_USAGE,
        )
    ca, cert, key = (Path(os.environ[n]) for n in names)
    return TLSConfig(ca_file=ca, cert_file=cert, key_file=key)


@backup_app.callback()
def backup(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", help="a new directory for the backup")
    ] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
    lab_dir: Annotated[Path | None, _lab_dir("the lab to back up")] = None,
    inside: InsideOpt = False,
) -> None:
    """Take a consistent, checksummed backup of Chainfire, FlareDB and IAM while they
    serve (files 0600, a manifest with their SHA-256)."""
    import asyncio

    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise _fail("give --out DIR (or `plasma cluster backup verify DIR`)", EXIT_USAGE)
    from dataclasses import asdict

    from plasmacloud.cluster.backup import BackupError, take_backup
    from plasmacloud.common.config import ConfigError, NodeConfig

    qemu = _qemu_lab(config, lab_dir, inside)
    if qemu is not None:
        # the VMs' addresses exist only in the lab namespace: the backup is taken there
        argv = ["cluster", "backup", "--out", str(out.resolve()), *(["--json"] if as_json else [])]
        if (code := relayed(qemu, argv)) is not None:
            raise typer.Exit(code)
        target = qemu.target()
        node, operator = target.configs[0], target.tls
    else:
        try:
            node = NodeConfig.load(config or _lab_node_config(lab_dir))
        except ConfigError as exc:
            raise _fail(exc, EXIT_USAGE) from None
        operator = _operator_tls(node.tls.enabled)
    try:
        manifest = asyncio.run(take_backup(node, operator, out))
    except BackupError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(asdict(manifest)))
        return
    typer.echo(
        f"backup of {manifest.cluster} in {out}: Chainfire revision "
        f"{manifest.chainfire.detail['revision']} ({manifest.chainfire.bytes} bytes), FlareDB "
        f"{manifest.flaredb.bytes} bytes, {manifest.iam.detail['records']} IAM records"
    )


def _qemu_lab(config: Path | None, lab_dir: Path | None, inside: bool) -> LabSurface | None:
    """The qemu lab --dir ($PLASMA_LAB_DIR) names when no --config is given (None
    otherwise: a process or netns lab's node config is read on this host)."""
    from plasmacloud.lab.qemu_layout import existing_qemu_lab

    if config is not None or lab_dir is None:
        return None
    root = lab_dir.expanduser()
    return open_any_lab(root, inside=inside) if existing_qemu_lab(root) else None


def _existing_lab(lab_dir: Path) -> Lab:
    """The lab in ``lab_dir``; a usage error if there is none."""
    from plasmacloud.lab.control import Lab

    if not (lab_dir / "lab.json").exists():
        raise _fail(f"{lab_dir} is not a lab directory (no lab.json)", EXIT_USAGE)
    return Lab.open(lab_dir)


def _lab_node_config(lab_dir: Path | None) -> Path:
    """The first node's config of the lab --dir ($PLASMA_LAB_DIR) names."""
    if lab_dir is None:
        raise _fail(f"give --config, --dir or set {LAB_DIR_ENV}", EXIT_USAGE)
    lab = _existing_lab(lab_dir.expanduser())
    return lab.layout.config_path(lab.spec.node_ids[0])


@backup_app.command("verify")
def verify(
    directory: Annotated[Path, typer.Argument(help="a backup directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
) -> None:
    """Check every file of a backup against its manifest and its own format."""
    from dataclasses import asdict

    from plasmacloud.cluster.backup import BackupError, verify_backup

    try:
        manifest = verify_backup(directory)
    except BackupError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(asdict(manifest)))
    else:
        typer.echo(
            f"ok: {directory} is a sound backup of {manifest.cluster} ({manifest.created_at})"
        )


@app.command("rolling-restart")
def rolling_restart(
    lab_dir: Annotated[Path | None, _lab_dir("the lab whose nodes to restart")] = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            "-s",
            help="instead of a lab: real machines, this cluster.yaml's nodes, restarted over "
            "SSH (systemctl stop/start of their plasmacloud-* units)",
            show_default=False,
        ),
    ] = None,
    out: OutOpt = Path("out"),
    services: ServicesOpt = DEFAULT_SERVICES,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="seconds each node may take until the cluster is ready [default: 60; 600 "
            "on a QEMU lab, whose emulated CPUs start a service in tens of seconds]",
            show_default=False,
        ),
    ] = None,
    upgrade: Annotated[
        str | None,
        typer.Option(
            "--upgrade",
            metavar="PLASMA",
            help="a lab only: restart every node on this `plasma` executable (another "
            "build's or venv's), which the lab keeps running from then on",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    inside: InsideOpt = False,
) -> None:
    """Restart every node once, one at a time: followers first, the leader last (it hands
    leadership over as it stops), each only once the cluster is ready again; refused on
    an unhealthy cluster. With --upgrade, a lab comes back on another build this way."""
    import asyncio
    from dataclasses import asdict

    from plasmacloud.cluster.control import ClusterError
    from plasmacloud.cluster.rolling import rolling_restart as roll
    from plasmacloud.lab.target import lab_target
    from plasmacloud.provision.spec import SpecError

    progress = _progress(as_json)
    qemu = _qemu_lab(spec, lab_dir, inside)
    if qemu is not None:
        from plasmacloud.lab.qemu_target import QEMU_RECOVER_S

        if upgrade is not None:
            why = "a QEMU lab's VMs run the build in their PXE image; `plasma lab up` again"
            raise _fail(f"--upgrade needs a process or netns lab: {why}", EXIT_USAGE)
        timeout = QEMU_RECOVER_S if timeout is None else timeout
        # the VMs' addresses exist only in the lab namespace: the restarts are driven there
        argv = ["cluster", "rolling-restart", "--timeout", str(timeout)]
        if (code := relayed(qemu, [*argv, *(["--json"] if as_json else [])])) is not None:
            raise typer.Exit(code)
        target = qemu.target()
    elif spec is not None:
        if upgrade is not None:
            raise _fail(
                "--upgrade runs on a lab; real machines get a new version by a deploy "
                "(`plasma deploy`), then a rolling restart",
                EXIT_USAGE,
            )
        try:
            target = ssh_spec_target(spec, out, services, (None, None, None), identity, known_hosts)
        except (SpecError, KeyError, FileNotFoundError, ValueError) as exc:
            raise _fail(exc, EXIT_USAGE) from None
    elif lab_dir is not None:
        lab = _existing_lab(lab_dir)
        if upgrade is not None:
            from plasmacloud.lab.backend import LabError
            from plasmacloud.lab.upgrade import switch_plasma

            try:
                version = switch_plasma(lab, upgrade)
            except LabError as exc:
                raise _fail(exc, EXIT_USAGE) from None
            progress(f"upgrading {lab_dir} to plasmacloud {version} ({lab.state.plasma})")
        target = lab_target(lab)
    else:
        raise _fail(f"give --spec, --dir or set {LAB_DIR_ENV} (`plasma lab env` does)", EXIT_USAGE)

    try:
        done = asyncio.run(roll(target, 60.0 if timeout is None else timeout, progress))
    except ClusterError as exc:
        raise _fail(exc) from None
    except ssl.SSLError as exc:  # the operator's files exist but are no certificate/key
        raise _fail(f"the operator's TLS files do not load: {exc}", EXIT_USAGE) from None
    if as_json:
        typer.echo(json.dumps([asdict(d) for d in done]))
        return
    for d in done:
        typer.echo(f"{d.node_id}{' (was leader)' if d.was_leader else ''}: {d.seconds:.1f} s")


@app.command("remove-node")
def remove_node(
    node: Annotated[str, typer.Argument(help="the member to take out, e.g. node03")],
    lab_dir: Annotated[Path | None, _lab_dir("the lab to take it out of")] = None,
    config: Annotated[
        Path | None,
        _instead_of_a_lab(
            "a member's cluster-config.json of a real cluster (dialled as the operator of "
            "$ETCDCTL_CACERT/CERT/KEY)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Take a node out of Chainfire, FlareDB and IAM (etcdctl member remove + rqlite's
    DELETE /remove), moving Chainfire's leadership away first if it leads; refused while
    another member is unhealthy. A lab's node is also stopped and dropped from the lab;
    a real node stops its services itself once removed."""
    import asyncio
    from dataclasses import asdict

    from plasmacloud.cluster.control import ClusterError
    from plasmacloud.cluster.membership import Change
    from plasmacloud.cluster.membership import remove_node as remove
    from plasmacloud.lab.members import remove_lab_node

    progress = _progress(as_json)

    try:
        change: Change
        if config is not None:
            change = asyncio.run(remove(_config_target(config), node, progress, stop=False))
        elif lab_dir is not None:
            change = asyncio.run(remove_lab_node(_existing_lab(lab_dir), node, progress))
        else:
            raise _fail(f"give --config, --dir or set {LAB_DIR_ENV}", EXIT_USAGE)
    except ClusterError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(asdict(change)))
        return
    moved = f" (leadership moved to {change.moved_leader_to})" if change.moved_leader_to else ""
    typer.echo(f"removed {node}{moved} in {change.seconds:.1f} s")


def _progress(quiet: bool) -> Callable[[str], None]:
    def progress(step: str) -> None:
        if not quiet:
            typer.echo(step, err=True)

    return progress


def _config_target(path: Path) -> ClusterTarget:
    """A real cluster as one member's cluster-config.json describes it, dialled as the
    operator of $ETCDCTL_CACERT/CERT/KEY."""
    from plasmacloud.cluster.membership import member_configs
    from plasmacloud.cluster.services import SERVICES
    from plasmacloud.cluster.target import ClusterTarget
    from plasmacloud.common.config import ConfigError, NodeConfig

    try:
        member = NodeConfig.load(path)
    except ConfigError as exc:
        raise _fail(exc, EXIT_USAGE) from None
    return ClusterTarget(
        "config", member_configs(member), _operator_tls(member.tls.enabled), SERVICES
    )


@app.command("add-node")
def add_node(
    node: Annotated[str, typer.Argument(help="the node to add, e.g. node04")],
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            help="a cluster-config.json rendered with the node among the peers (its own, "
            "from `plasma provision add-node`); the operator dials as $ETCDCTL_CACERT/CERT/KEY",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Add a running node (started with bootstrap: false) to Chainfire, FlareDB and IAM of
    a real cluster (etcdctl member add + rqlite's POST /join); the lab's is `plasma lab
    add-node`. Refused while a member is unhealthy."""
    import asyncio
    from dataclasses import asdict

    from plasmacloud.cluster.control import ClusterError
    from plasmacloud.cluster.membership import add_node as add

    try:
        change = asyncio.run(add(_config_target(config), node, _progress(as_json), start=False))
    except ClusterError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(asdict(change)))
        return
    typer.echo(f"added {node} in {change.seconds:.1f} s")


@app.command("recover")
def recover(
    survivor: Annotated[
        str, typer.Option("--from", help="the surviving node: the new cluster's only member")
    ],
    lab_dir: Annotated[
        Path | None,
        _lab_dir("the lab to recover: stops the survivor, rewrites its data, starts it"),
    ] = None,
    config: Annotated[
        Path | None,
        _instead_of_a_lab(
            "on a real node, the survivor's own cluster-config.json; only rewrites its data "
            "(stop its services before, start them after)"
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="recover even though a quorum still answers")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="seconds the survivor may take to serve alone (lab)")
    ] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """After losing a majority for good: a new one-member cluster from the survivor's data
    for Chainfire, FlareDB and IAM (etcd's --force-new-cluster, rqlite's peers.json).
    Refused while the survivor and the members that answer make a quorum, unless --force."""
    import asyncio
    from dataclasses import asdict

    from plasmacloud.cluster.control import ClusterError
    from plasmacloud.cluster.recover import recover_cluster, recover_node
    from plasmacloud.common.config import ConfigError, NodeConfig

    progress = _progress(as_json)

    dropped: list[str] = []  # lab members that left with the lost majority
    try:
        if config is not None:
            try:
                node = NodeConfig.load(config)
            except ConfigError as exc:
                raise _fail(exc, EXIT_USAGE) from None
            if node.node_id != survivor:
                raise _fail(f"{config} is {node.node_id}'s config, not {survivor}'s", EXIT_USAGE)
            done = asyncio.run(recover_node(node, force))
        else:
            from plasmacloud.lab.target import lab_target

            if lab_dir is None:
                raise _fail(
                    f"give --dir (a lab), --config (on the node) or set {LAB_DIR_ENV}", EXIT_USAGE
                )
            from plasmacloud.lab.members import forget_lost

            lab = _existing_lab(lab_dir)
            done = asyncio.run(recover_cluster(lab_target(lab), survivor, force, timeout, progress))
            dropped = forget_lost(lab, survivor)
    except ClusterError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps({**asdict(done), "dropped": dropped}))
        return
    for service, forced in done.groups.items():
        typer.echo(f"{service}: {survivor} is the only member (from index {forced.index})")
    if config is None:
        typer.echo(f"{survivor} serves alone after {done.seconds:.1f} s")
        typer.echo(
            f"{', '.join(dropped)} dropped from the lab; grow it back with `plasma lab add-node`"
        )
    else:
        typer.echo(f"start {survivor}'s services now: it comes up as a one-member cluster")
