"""`plasma chainfire ...` commands."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import typer

from plasmacloud.cli.removed import TrustedCnOpt
from plasmacloud.common.config import NodeConfig

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
        help="IAM base URL (repeatable); when given, auth is on: every call is made by an "
        "IAM principal (an etcdctl --user token's, or the one a client certificate's CN "
        "names) allowed chainfire:<RPC> on key/<key>",
    ),
    trusted_cn: TrustedCnOpt = None,
) -> None:
    """Run this node's Chainfire member in the foreground (logs to stderr; SIGTERM stops it)."""
    from plasmacloud.chainfire.server import new_event_loop
    from plasmacloud.chainfire.server import serve as run
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
            auto_compaction_retention=auto_compaction_retention,
            watch_progress_interval=watch_progress_notify_interval,
            auth=service_auth("chainfire", iam_url or ()),
        )

    with serve_exit_codes("chainfire"), asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main(NodeConfig.load(config)))
