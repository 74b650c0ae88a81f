"""`plasma chainfire ...` commands."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import typer

from plasmacloud.common.errors import EXIT_FAILURE, EXIT_USAGE

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
    auto_compaction_retention: int = typer.Option(
        0, help="revisions of history to keep, compacting older ones every 5 min (0: off)"
    ),
    watch_progress_notify_interval: float = typer.Option(
        600.0,
        help="seconds between progress notifications to idle watchers that asked for them "
        "(etcd's --experimental-watch-progress-notify-interval)",
    ),
    iam_url: list[str] | None = typer.Option(
        None,
        help="IAM base URL (repeatable); when given, auth is on: every call needs an IAM "
        "token (etcdctl --user) allowing chainfire:<RPC> on key/<key>",
    ),
    trusted_cn: list[str] | None = typer.Option(
        None,
        help="with --iam-url: a client certificate CN allowed without a token (repeatable; "
        "the cluster's node ids always are)",
    ),
) -> None:
    """Run this node's Chainfire member in the foreground (logs to stderr; SIGTERM stops it)."""
    import asyncio

    from plasmacloud.chainfire.server import new_event_loop
    from plasmacloud.chainfire.server import serve as run
    from plasmacloud.common.config import ConfigError, NodeConfig

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        node_config = NodeConfig.load(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(
            node_config,
            stop,
            quota_bytes=quota_bytes,
            snapshot_threshold=snapshot_threshold,
            auto_compaction_retention=auto_compaction_retention,
            watch_progress_interval=watch_progress_notify_interval,
            iam_urls=tuple(iam_url or ()),
            trusted_cns=tuple(trusted_cn or ()),
        )

    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(main())
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    except OSError as exc:
        typer.echo(f"error: chainfire could not start: {exc}", err=True)
        raise typer.Exit(EXIT_FAILURE) from exc
