"""`plasma flaredb ...` commands and `plasma sql` (the FlareDB shell)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from plasmacloud.cli.removed import TrustedCnOpt
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE

if TYPE_CHECKING:
    import ssl

    from plasmacloud.flaredb.client import Client
    from plasmacloud.flaredb.models import Result

app = typer.Typer(
    help="FlareDB: replicated SQL with an rqlite-compatible API.", no_args_is_help=True
)


@app.command()
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="the node's cluster-config.json")],
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
    snapshot_threshold: Annotated[
        int, typer.Option(help="applied entries between Raft snapshots / log compactions")
    ] = 10_000,
    iam_url: Annotated[
        list[str] | None,
        typer.Option(
            help="IAM base URL (repeatable); when given, /db/* requests are made by an IAM "
            "principal (a Bearer token's, Basic user:password's, or the one a client "
            "certificate's CN names) allowed flaredb:Query / flaredb:Execute"
        ),
    ] = None,
    trusted_cn: TrustedCnOpt = None,
) -> None:
    """Run this node's FlareDB (SQLite + Raft + HTTP API) in the foreground until SIGTERM."""
    from plasmacloud.common.serve_errors import serve_exit_codes
    from plasmacloud.flaredb.server import run  # the engine is only needed to serve
    from plasmacloud.iam.authz import service_auth  # composed here: flaredb knows no IAM

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with serve_exit_codes("flaredb"):
        run(
            config,
            snapshot_threshold=snapshot_threshold,
            auth=service_auth("flaredb", iam_url or ()),
        )


def _ssl_context(cacert: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    import ssl

    if cacert is None:
        return None
    ctx = ssl.create_default_context(cafile=str(cacert))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def _render(console: Console, result: Result) -> None:
    from plasmacloud.flaredb.models import ExecuteResult, QueryResult

    if isinstance(result, QueryResult):
        table = Table(*result.columns, show_lines=False)
        for row in result.values:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        console.print(table)
        console.print(f"({len(result.values)} row{'s' if len(result.values) != 1 else ''})")
    elif isinstance(result, ExecuteResult):
        extra = f", last insert id {result.last_insert_id}" if result.last_insert_id else ""
        console.print(f"{result.rows_affected} row(s) affected{extra}")
    else:
        console.print(f"[red]error:[/red] {result.error}")


def _run(client: Client, sql: str, level: str, as_json: bool, console: Console) -> bool:
    """Run a script; print each result; False if any statement failed."""
    from plasmacloud.flaredb.models import ErrorResult, Statement
    from plasmacloud.flaredb.sqlscan import split_statements

    stmts = [Statement(s) for s in split_statements(sql)]
    if not stmts:
        return True
    results = client.request(stmts, level=level)
    if as_json:
        typer.echo(json.dumps({"results": [r.to_json() for r in results]}, indent=2))
    else:
        for r in results:
            _render(console, r)
    return not any(isinstance(r, ErrorResult) for r in results)


def _shell(client: Client, level: str, as_json: bool, console: Console) -> None:
    import readline  # noqa: F401  (line editing and history for input())

    from plasmacloud.flaredb.client import Error
    from plasmacloud.flaredb.sqlscan import split_statements

    console.print(
        f"FlareDB shell on {client.url} (level={level}); end statements with ';', "
        ".tables, .schema, .quit"
    )
    buffer = ""
    while True:
        try:
            line = input("flaredb> " if not buffer else "    ...> ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        stripped = line.strip()
        if not buffer and stripped in (".quit", ".exit"):
            return
        if not buffer and stripped == ".tables":
            line = "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE '\\_%' "
            line += "ESCAPE '\\' ORDER BY name;"
        elif not buffer and stripped == ".schema":
            line = "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE "
            line += "'\\_flaredb%' ESCAPE '\\';"
        buffer += line + "\n"
        if split_statements(buffer) and buffer.rstrip().endswith(";"):
            try:
                _run(client, buffer, level, as_json, console)
            except Error as exc:
                console.print(f"[red]error:[/red] {exc}")
            buffer = ""


def sql(
    command: Annotated[
        str | None, typer.Option("-c", "--command", help="run this SQL (';'-separated) and exit")
    ] = None,
    url: Annotated[
        str, typer.Option("--url", envvar="FLAREDB_URL", help="node URL (default $FLAREDB_URL)")
    ] = "http://127.0.0.1:4001",
    level: Annotated[
        str, typer.Option("--level", help="read consistency: none, weak, strong, linearizable")
    ] = "weak",
    as_json: Annotated[bool, typer.Option("--json", help="print rqlite-shaped JSON")] = False,
    cacert: Annotated[Path | None, typer.Option("--cacert", envvar="PLASMA_CACERT")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", envvar="PLASMA_CERT")] = None,
    key: Annotated[Path | None, typer.Option("--key", envvar="PLASMA_KEY")] = None,
    token: Annotated[
        str | None, typer.Option("--token", envvar="PLASMA_TOKEN", help="IAM access token")
    ] = None,
) -> None:
    """FlareDB SQL shell, or run one script with -c (tables, or --json)."""
    from plasmacloud.flaredb.client import Client, Error, OperationalError

    console = Console()
    try:
        ctx = _ssl_context(cacert, cert, key) if url.startswith("https") else None
        client = Client(url, ctx, token=token)
    except Error as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    if command is None:
        _shell(client, level, as_json, console)
        return
    try:
        ok = _run(client, command, level, as_json, console)
    except OperationalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNAVAILABLE) from exc
    except Error as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILURE) from exc
    if not ok:
        raise typer.Exit(EXIT_FAILURE)


app.command("sql")(sql)
