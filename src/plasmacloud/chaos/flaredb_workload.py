"""The FlareDB client of a chaos run: unique inserts (some in two-row transactions) and
linearizable reads of the whole table, recorded as a set history.

Each inserted row is an ``add`` of its element to the set ``flaredb:<table>``; a
``SELECT`` at ``level=linearizable`` is a ``read_set``. An HTTP 200 whose result carries
an SQL error was applied as a no-op (``fail``); a 503, a timeout or a dropped connection
may or may not have been applied (``unknown``).
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from plasmacloud.chaos.history import Op, Outcome
from plasmacloud.chaos.workload import READS_PER_SET_READ, Budget, Recorder

HTTP_TIMEOUT_S = 1.5
TXN_EVERY = 4  # every 4th write inserts two rows in one transaction


@dataclass
class FlareClients:
    """FlareDB API base URLs per node and the operator's TLS context."""

    urls: dict[str, str]
    ssl_ctx: ssl.SSLContext | None
    table: str

    @property
    def nodes(self) -> list[str]:
        return sorted(self.urls)

    @property
    def set_key(self) -> str:
        return f"flaredb:{self.table}"

    async def post(
        self, session: aiohttp.ClientSession, node: str, path: str, body: list[list[str]]
    ) -> Any:
        """POST statements; the parsed JSON of a 200, else raises ``aiohttp.ClientError``."""
        async with session.post(
            self.urls[node] + path, json=body, ssl=self.ssl_ctx or True
        ) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=await resp.text()
                )
            return await resp.json()


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))


async def create_table(fc: FlareClients) -> None:
    """Create the run's table through whichever node accepts it."""
    last: Exception | None = None
    async with _session() as session:
        for node in fc.nodes * 3:
            try:
                sql = f"CREATE TABLE IF NOT EXISTS {fc.table} (e TEXT PRIMARY KEY)"
                doc = await fc.post(session, node, "/db/execute", [[sql]])
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = exc
                continue
            if "error" not in doc["results"][0]:
                return
            last = RuntimeError(doc["results"][0]["error"])
    raise ConnectionError(f"FlareDB did not create {fc.table}: {last}")


async def flaredb_worker(
    proc: int, fc: FlareClients, rec: Recorder, budget: Budget, rng: random.Random
) -> None:
    """Inserts and whole-table reads until the budget runs out."""
    node = rng.choice(fc.nodes)
    n = 0
    async with _session() as session:
        while budget.take():
            n += 1
            if n % READS_PER_SET_READ == 0:
                ok = await flaredb_read(proc, fc, rec, session, node)
            else:
                rows = [f"f{proc}-{n}"] + ([f"f{proc}-{n}b"] if n % TXN_EVERY == 0 else [])
                ok = await _insert(proc, fc, rec, session, node, rows)
            if not ok:
                node = rng.choice([x for x in fc.nodes if x != node] or fc.nodes)


async def _insert(
    proc: int,
    fc: FlareClients,
    rec: Recorder,
    session: aiohttp.ClientSession,
    node: str,
    rows: list[str],
) -> bool:
    invoke = rec.now()
    stmts = [[f"INSERT INTO {fc.table}(e) VALUES(?)", e] for e in rows]
    path = "/db/execute?transaction" if len(rows) > 1 else "/db/execute"
    outcome: Outcome = "ok"
    try:
        doc = await fc.post(session, node, path, stmts)
        if any("error" in r for r in doc["results"]):
            outcome = "fail"
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        outcome = "unknown"
    complete = rec.now() if outcome == "ok" else None
    for e in rows:
        rec.ops.append(
            Op(process=proc, kind="add", key=fc.set_key, value=e, invoke=invoke,
               complete=complete, outcome=outcome, node=node)
        )  # fmt: skip
    return outcome == "ok"


async def flaredb_read(
    proc: int, fc: FlareClients, rec: Recorder, session: aiohttp.ClientSession, node: str
) -> bool:
    """One linearizable read of the whole table through ``node``; False if it failed."""
    invoke = rec.now()
    try:
        doc = await fc.post(
            session, node, "/db/query?level=linearizable", [[f"SELECT e FROM {fc.table}"]]
        )
        result = doc["results"][0]
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return False
    if "error" in result:
        return False
    rec.ops.append(
        Op(process=proc, kind="read_set", key=fc.set_key, invoke=invoke, complete=rec.now(),
           outcome="ok", elements=sorted(str(v[0]) for v in result.get("values", [])), node=node)
    )  # fmt: skip
    return True


async def final_reads(proc: int, fc: FlareClients, rec: Recorder) -> None:
    """A linearizable read through every node at the end of a run."""
    async with _session() as session:
        for node in fc.nodes:
            await flaredb_read(proc, fc, rec, session, node)
