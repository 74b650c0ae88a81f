"""`plasma sql` against a live node: one-shot scripts, tables and JSON, exit codes."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_USAGE
from plasmacloud.flaredb.sqlscan import split_statements

from .cluster import make_configs
from .conftest import LiveNode


def test_split_statements_keeps_triggers_and_strings_whole() -> None:
    script = "SELECT ';'; CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END; -- c\n; SELECT 2"
    assert split_statements(script) == [
        "SELECT ';';",
        "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END;",
        "SELECT 2",
    ]


async def test_sql_one_shot(live_node: LiveNode) -> None:
    runner = CliRunner()

    def sql(*args: str) -> tuple[int, str]:
        res = runner.invoke(app, ["flaredb", "sql", "--url", live_node.url, *args])
        return res.exit_code, res.output

    code, out = await asyncio.to_thread(
        sql, "-c", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('x');"
    )
    assert code == 0 and "1 row(s) affected, last insert id 1" in out
    code, out = await asyncio.to_thread(sql, "-c", "SELECT id, v FROM t", "--level", "strong")
    assert code == 0 and "│ 1  │ x │" in out and "(1 row)" in out
    code, out = await asyncio.to_thread(sql, "--json", "-c", "SELECT v FROM t")
    assert code == 0 and json.loads(out) == {
        "results": [{"columns": ["v"], "types": ["text"], "values": [["x"]]}]
    }
    code, out = await asyncio.to_thread(sql, "-c", "SELECT * FROM missing")
    assert code == 1 and "no such table: missing" in out
    code, out = await asyncio.to_thread(sql, "-c", "BEGIN")
    assert code == 1 and "?transaction" in out
    res = await asyncio.to_thread(
        runner.invoke, app, ["flaredb", "sql", "--url", "http://127.0.0.1:1", "-c", "SELECT 1"]
    )
    assert res.exit_code == 3


def test_serve_reports_bad_config_and_busy_port(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["flaredb", "serve", "--config", str(tmp_path / "missing.json")])
    assert res.exit_code == EXIT_USAGE and "no such file" in res.output
    (cfg, *_) = make_configs(tmp_path, ("127.0.0.51",))
    path = tmp_path / "node01.json"
    cfg.dump(path)
    with socket.socket() as busy:
        busy.bind((str(cfg.ip), cfg.ports.flaredb_http))
        busy.listen()
        res = runner.invoke(app, ["flaredb", "serve", "--config", str(path)])
    assert res.exit_code == EXIT_FAILURE, res.output
    assert "flaredb could not start" in res.output and "address already in use" in res.output
