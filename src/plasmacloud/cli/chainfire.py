"""`plasma chainfire ...` commands."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from plasmacloud.cli.removed import TrustedCnOpt
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_USAGE

if TYPE_CHECKING:
    from plasmacloud.common.config import ChainfireOptions, Compaction

app = typer.Typer(
    help="Chainfire: the etcd-compatible coordination KV store.", no_args_is_help=True
)


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="the node's cluster-config.json"),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING or ERROR"),
    quota_bytes: int = typer.Option(
        2 * 1024**3, help="backend size that raises the NOSPACE alarm (etcd's default 2 GiB)"
    ),
    snapshot_threshold: int | None = typer.Option(
        None, help="applied entries between Raft snapshots (default 100000, etcd's)"
    ),
    auto_compaction_mode: str | None = typer.Option(
        None,
        help="periodic (keep a duration of history) or revision (keep a number of "
        "revisions); default: the config's chainfire.auto_compaction (periodic)",
    ),
    auto_compaction_retention: str | None = typer.Option(
        None,
        help="periodic: a duration like 1h or 30m (a bare number is hours); revision: a "
        "number of revisions; 0 turns it off. Default: the config's (1h)",
    ),
    watch_progress_notify_interval: float = typer.Option(
        600.0,
        help="seconds between progress notifications to idle watchers that asked for them "
        "(etcd's --experimental-watch-progress-notify-interval)",
    ),
    iam_url: list[str] | None = typer.Option(
        None,
        help="IAM base URL (repeatable); when given, auth is on: every call is made by an "
        "IAM principal (an etcdctl --user token's, or the one a client certificate's CN "
        "names) allowed chainfire:<RPC> on key/<key>",
    ),
    trusted_cn: TrustedCnOpt = None,
    frontends: str | None = typer.Option(
        None,
        metavar="N|auto",
        help="serve the client port from N worker processes (TLS, HTTP/2 and gRPC framing "
        "off the process that owns Raft and the store; for machines with cores to spare), "
        "0-64; 0: in the member's own process; auto: one per usable core less one. "
        "Default: the config's chainfire.frontends (0)",
    ),
) -> None:
    """Run this node's Chainfire member in the foreground (logs to stderr; SIGTERM stops it)."""
    import asyncio

    from plasmacloud.chainfire.listen import new_event_loop
    from plasmacloud.chainfire.server import serve as run
    from plasmacloud.common.config import NodeConfig
    from plasmacloud.common.gc_tuning import tune_gc
    from plasmacloud.common.serve_errors import serve_exit_codes
    from plasmacloud.iam.authz import service_auth  # composed here: chainfire knows no IAM

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def main(node_config: NodeConfig) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(
            node_config,
            stop,
            quota_bytes=quota_bytes,
            snapshot_threshold=snapshot_threshold,
            compaction=compaction,
            watch_progress_interval=watch_progress_notify_interval,
            auth=service_auth("chainfire", iam_url or ()),
            frontends=options.frontend_workers(),
        )

    def load() -> tuple[NodeConfig, Compaction, ChainfireOptions]:
        node = NodeConfig.load(config)
        configured = node.chainfire.auto_compaction
        return (
            node,
            _compaction(configured, auto_compaction_mode, auto_compaction_retention),
            _frontends(node.chainfire, frontends),
        )

    with serve_exit_codes("chainfire"):
        node_config, compaction, options = load()  # refused before anything starts
        tune_gc()  # the modules are imported by now
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(main(node_config))


def _frontends(configured: ChainfireOptions, frontends: str | None) -> ChainfireOptions:
    """The config's Chainfire options with ``--frontends`` over them."""
    from pydantic import ValidationError

    from plasmacloud.common.config import MAX_FRONTENDS, ChainfireOptions, ConfigError

    if frontends is None:
        return configured
    try:  # the model checks the flag as it checks cluster.yaml's chainfire.frontends
        return ChainfireOptions.model_validate({**configured.model_dump(), "frontends": frontends})
    except ValidationError:
        raise ConfigError(
            f"--frontends is {frontends!r}; give a number of worker processes from 0 to "
            f"{MAX_FRONTENDS}, or auto (one per usable core less one)"
        ) from None


def _compaction(configured: Compaction, mode: str | None, retention: str | None) -> Compaction:
    """The config's compaction policy with the command line's flags over it."""
    from pydantic import ValidationError

    from plasmacloud.common.config import Compaction, ConfigError

    if mode is None and retention is None:
        return configured
    try:
        return Compaction(
            mode=mode or configured.mode,  # type: ignore[arg-type]  # checked by the model
            retention=retention if retention is not None else configured.retention,
        )
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"--auto-compaction-mode/--auto-compaction-retention: {problem}"
        ) from None


snapshot_app = typer.Typer(help="Inspect snapshot files (etcdctl snapshot save's).")
app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.command("status")
def snapshot_status(
    path: Path = typer.Argument(..., help="a snapshot file"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Hash, revision, total keys and size of a snapshot (etcdctl snapshot status)."""
    from dataclasses import asdict

    from plasmacloud.chainfire.restore import SnapshotError
    from plasmacloud.chainfire.restore import snapshot_status as status_of

    try:
        status = status_of(path)
    except SnapshotError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILURE) from None
    if as_json:
        typer.echo(json.dumps(asdict(status)))
        return
    typer.echo("HASH      REVISION  TOTAL KEYS  TOTAL SIZE")
    typer.echo(
        f"{status.hash:08x}  {status.revision:<8}  {status.total_keys:<10}  {status.total_size}"
    )


@app.command()
def restore(
    path: Path = typer.Argument(..., help="a snapshot file (etcdctl snapshot save's)"),
    config: Path = typer.Option(..., "--config", "-c", help="this node's cluster-config.json"),
    system_records: Path | None = typer.Option(
        None, help="IAM's records from a `plasma cluster backup` (iam.json) to put back"
    ),
) -> None:
    """Lay a snapshot down as this node's Chainfire data (etcdctl snapshot restore).

    Run it on every member, with the service stopped and its data directory empty; the
    members then start a new Raft group (from the config's peers) at the snapshot's
    revision.
    """
    from plasmacloud.chainfire.restore import (
        SnapshotError,
        member_addresses,
        read_snapshot,
        read_system_records,
        restore_member,
    )
    from plasmacloud.common.config import ConfigError, NodeConfig

    try:
        node = NodeConfig.load(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    try:
        records = read_system_records(system_records) if system_records else []
        data, members = node.data_path("chainfire"), member_addresses(node)
        revision = restore_member(read_snapshot(path), data, members, records)
    except SnapshotError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILURE) from None
    typer.echo(
        f"restored {node.node_id}'s Chainfire data at revision {revision} "
        f"({len(records)} system records) into {node.data_path('chainfire')}"
    )
