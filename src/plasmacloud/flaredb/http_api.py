"""FlareDB's rqlite-compatible HTTP API (aiohttp).

Writes become one Raft entry per request (followers hand the proposal to the engine,
which forwards it to the leader; ``?redirect`` answers 301 instead). Reads go where the
``level`` says: ``none`` the local file, ``weak`` the leader's file (a follower forwards
the request), ``linearizable`` a ReadIndex barrier then the local file, ``strong``
through the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plasmacloud import __version__
from plasmacloud.common import durations
from plasmacloud.flaredb.auth import CLUSTER, EXECUTE, JOIN, QUERY, REMOVE, Guard
from plasmacloud.flaredb.command import LOAD, Command
from plasmacloud.flaredb.metrics import FlareMetrics
from plasmacloud.flaredb.models import (
    ErrorResult,
    ExecuteResult,
    RequestError,
    Response,
    Result,
    Run,
    Statement,
    WireForm,
    group_runs,
    parse_runs,
)
from plasmacloud.flaredb.sqlscan import (
    NonDeterministicError,
    check_query,
    is_read_only,
    make_deterministic,
)
from plasmacloud.flaredb.store import SQLiteStore, load_statements
from plasmacloud.raft.api import (
    Consensus,
    NoLeaderError,
    NotLeaderError,
    ProposalDroppedError,
    ProposalTimeoutError,
    RaftError,
)

log = logging.getLogger(__name__)

# One request is one Raft entry, and the engine's frames and per-peer buffers are bounded
# (raft.codec.MAX_FRAME, raft.transport.MAX_BUFFERED): an entry near those would stall
# replication, so both the body and the encoded entry are capped well below them.
MAX_BODY = 16 * 1024 * 1024
MAX_ENTRY = 16 * 1024 * 1024
# Bodies and batches above these are parsed, rewritten and encoded in a worker thread.
_OFFLOAD_BYTES = 256 * 1024
_OFFLOAD_STATEMENTS = 1000
FORWARDED_HEADER = "X-FlareDB-Forwarded"
LEVELS = ("none", "weak", "strong", "linearizable", "auto")
# The wire form of each endpoint's results (a load answers as an execute).
_ENDPOINT_FORMS = {"execute": "execute", "load": "execute", "query": "query", "request": "request"}


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Where one member of the FlareDB group answers."""

    node_id: str
    api_url: str  # "https://127.0.0.11:4001"
    raft_addr: str  # "127.0.0.11:4002"


def parse_duration(text: str) -> float:
    """Seconds from a query option's duration; RequestError (a 400) if it is none."""
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def _flag(query: Mapping[str, str], name: str) -> bool:
    # rqlite flags are bare (?transaction); "=false"/"=0" switch them off.
    return name in query and query[name].lower() not in ("false", "0", "no")


@dataclass(frozen=True, slots=True)
class Options:
    """The query-string options of a /db/* request."""

    transaction: bool = False
    timings: bool = False
    pretty: bool = False
    associative: bool = False
    blob_array: bool = False
    redirect: bool = False
    level: str = "weak"
    freshness: float | None = None
    timeout: float = 10.0

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Options:
        level = query.get("level", "weak").lower() or "weak"
        if level not in LEVELS:
            raise RequestError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        if level == "auto":  # rqlite: weak on voters, and every FlareDB member votes
            level = "weak"
        return cls(
            transaction=_flag(query, "transaction"),
            timings=_flag(query, "timings"),
            pretty=_flag(query, "pretty"),
            associative=_flag(query, "associative"),
            blob_array=_flag(query, "blob_array"),
            redirect=_flag(query, "redirect"),
            level=level,
            freshness=parse_duration(query["freshness"]) if query.get("freshness") else None,
            timeout=parse_duration(query["timeout"]) if query.get("timeout") else 10.0,
        )


def _json(doc: Any, status: int = 200, pretty: bool = False) -> web.Response:
    text = json.dumps(doc, indent=4 if pretty else None, separators=None if pretty else (",", ":"))
    return web.Response(text=text, status=status, content_type="application/json")


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status=status)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure answers JSON ``{"error": ...}`` with the right status, never a trace."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text or exc.reason
        if exc.status == 404:
            message = f"no such endpoint {request.method} {request.path}"
        elif exc.status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        return _error(message or exc.reason, exc.status)
    except RequestError as exc:
        return _error(str(exc), 400)


class HttpApi:
    """The handlers of one node's HTTP API; :meth:`make_app` wires them to routes."""

    def __init__(
        self,
        node_id: str,
        store: SQLiteStore,
        raft: Consensus,
        peers: Sequence[PeerInfo],
        metrics: FlareMetrics,
        client_ssl: ssl.SSLContext | None = None,
        max_body: int = MAX_BODY,
        guard: Guard | None = None,
        max_entry: int = MAX_ENTRY,
        reload_peers: Callable[[], Sequence[PeerInfo]] | None = None,
    ) -> None:
        """``guard`` (IAM enforcement) is optional: without it the API is open to anyone
        who passes the transport's (m)TLS. ``reload_peers`` lists the peers again (the
        config file as it is now): asked for a member that ``peers`` does not know, as
        one that joined after this node started."""
        self.node_id = node_id
        self.store = store
        self.raft = raft
        self.peers = {p.node_id: p for p in peers}
        self._reload_peers = reload_peers
        self.metrics = metrics
        self.client_ssl = client_ssl
        self.max_body = max_body
        self.guard = guard
        self.max_entry = max_entry
        self.started = time.time()
        self._session: aiohttp.ClientSession | None = None
        # One thread: the read connection is used by one query at a time.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"flaredb-read-{node_id}")
        metrics.bind(db_size=store.size_bytes)

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body, middlewares=[_json_errors])
        app.router.add_post("/db/execute", self.execute)
        app.router.add_route("*", "/db/query", self.query)
        app.router.add_post("/db/request", self.db_request)
        app.router.add_get("/db/backup", self.backup)
        app.router.add_post("/db/load", self.load)
        app.router.add_get("/status", self.status)
        app.router.add_get("/nodes", self.nodes)
        app.router.add_delete("/remove", self.remove)
        app.router.add_post("/join", self.join)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.prometheus)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_cleanup(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._reader.shutdown(wait=True)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.client_ssl or False),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    # -- helpers -------------------------------------------------------------------

    def _peer(self, node_id: str) -> PeerInfo | None:
        if node_id not in self.peers and self._reload_peers is not None:
            self.peers = {p.node_id: p for p in self._reload_peers()}
        return self.peers.get(node_id)

    def _leader(self) -> PeerInfo | None:
        leader = self.raft.leader_id
        return self._peer(leader) if leader else None

    def _redirect(self, request: web.Request) -> web.Response:
        leader = self._leader()
        if leader is None:
            return _error("no leader is known; retry shortly", 503)
        location = leader.api_url + request.path_qs
        return web.Response(status=301, headers={"Location": location})

    async def _runs(self, request: web.Request) -> list[Run]:
        """The request's statements, grouped into runs of one SQL text."""
        body = b"" if request.method == "GET" else await request.read()
        if not body.strip():
            q = request.query.get("q")
            if q is None:
                raise RequestError(
                    f"{request.method} {request.path} needs a JSON array of statements "
                    "in the body (or the SQL in the q parameter)"
                )
            return [Run(q, ((),))]
        if len(body) > _OFFLOAD_BYTES:
            # Keep the event loop (and so Raft's heartbeats) responsive on bulk bodies.
            return await asyncio.to_thread(parse_runs, body)
        return parse_runs(body)

    def _respond(
        self, request: web.Request, results: list[Result], opts: Options, started: float
    ) -> web.Response:
        if not opts.timings:
            for r in results:
                r.time = None
        resp = Response(results, time.perf_counter() - started if opts.timings else None)
        endpoint = request.path.rsplit("/", 1)[-1]
        form = WireForm(opts.associative, opts.blob_array, _ENDPOINT_FORMS.get(endpoint, "query"))
        if opts.pretty:
            return _json(resp.to_json(form), pretty=True)
        return web.Response(text=resp.dumps(form), content_type="application/json")

    async def _propose(self, cmd: Command, timeout: float) -> list[Result]:
        data = (
            await asyncio.to_thread(cmd.encode) if len(cmd) > _OFFLOAD_STATEMENTS else cmd.encode()
        )
        if len(data) > self.max_entry:
            raise _Refused(
                f"the statements encode to {len(data):,} bytes, over the {self.max_entry:,}-byte "
                "limit of one replicated entry; split them into several requests",
                413,
            )
        self.store.remember_proposal(data, cmd)
        try:
            results = await self.raft.propose(data, timeout=timeout)
        except NotLeaderError as exc:
            reason = f"not the leader and the request could not be forwarded: {exc}"
        except NoLeaderError as exc:
            reason = f"no leader: {exc or 'election in progress'}; retry shortly"
        except ProposalDroppedError as exc:
            reason = f"leadership changed before the write committed: {exc}"
        except (ProposalTimeoutError, TimeoutError) as exc:
            reason = f"timed out after {timeout}s; the write may or may not apply ({exc})"
        except RaftError as exc:
            reason = f"raft: {exc}"
        else:
            return list(results)
        finally:
            self.store.forget_proposal(data)
        raise _Refused(reason)

    async def _denied(
        self, request: web.Request, kind: str, resource: str | None = None
    ) -> web.Response | None:
        return None if self.guard is None else await self.guard.check(request, kind, resource)

    # -- /db/* -----------------------------------------------------------------------

    async def execute(self, request: web.Request) -> web.Response:
        """POST /db/execute: write statements, one Raft entry for the whole body."""
        if denied := await self._denied(request, EXECUTE):
            return denied
        opts = Options.from_query(request.query)
        return await self._write(request, opts, await self._runs(request))

    async def query(self, request: web.Request) -> web.StreamResponse:
        """GET/POST /db/query: read statements at the requested consistency level."""
        if request.method not in ("GET", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        if denied := await self._denied(request, QUERY):
            return denied
        opts = Options.from_query(request.query)
        return await self._read(request, opts, await self._runs(request))

    async def db_request(self, request: web.Request) -> web.StreamResponse:
        """POST /db/request: reads take the query path, anything else the write path."""
        opts = Options.from_query(request.query)
        runs = await self._runs(request)
        reads = bool(runs) and all(is_read_only(r.sql) for r in runs)
        if denied := await self._denied(request, QUERY if reads else EXECUTE):
            return denied
        if reads:
            return await self._read(request, opts, runs)
        return await self._write(request, opts, runs)

    async def _write(self, request: web.Request, opts: Options, runs: list[Run]) -> web.Response:
        started = time.perf_counter()
        if opts.redirect and not self.raft.is_leader:
            return self._redirect(request)
        try:
            if len(runs) > _OFFLOAD_STATEMENTS:  # many distinct SQL texts to scan
                rewritten = await asyncio.to_thread(_deterministic, runs)
            else:
                rewritten = _deterministic(runs)
        except NonDeterministicError as exc:
            return _error(str(exc), 400)
        if not rewritten:
            return self._respond(request, [], opts, started)
        cmd = Command.from_runs(rewritten, opts.transaction)
        try:
            results = await self._propose(cmd, opts.timeout)
        except _Refused as exc:
            return _error(str(exc), exc.status)
        self.metrics.count("execute", results, time.perf_counter() - started)
        return self._respond(request, results, opts, started)

    async def _read(
        self, request: web.Request, opts: Options, runs: list[Run]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        stmts = [s for run in runs for s in run.statements()]
        level = opts.level
        if level == "weak" and not self.raft.is_leader:
            if opts.redirect:
                return self._redirect(request)
            if request.headers.get(FORWARDED_HEADER):
                return _error("forwarded to a node that is not the leader; retry", 503)
            return await self._forward(request, stmts)
        try:
            if level == "strong":
                for i, s in enumerate(stmts, start=1):
                    # Through the log the writer connection runs it: only true reads here.
                    if not is_read_only(s.sql):
                        return _error(
                            f"statement {i}: /db/query runs reads only; send writes to "
                            "/db/execute or /db/request",
                            400,
                        )
                    try:
                        check_query(s.sql)
                    except NonDeterministicError as exc:
                        return _error(f"statement {i}: {exc}", 400)
                results = await self._propose(Command.from_runs(runs), opts.timeout)
            else:
                if level == "linearizable" or self._behind_forwarder(request):
                    await self._read_barrier(opts.timeout)
                elif level == "none" and opts.freshness is not None and self._leader() is None:
                    return _error("stale read: this node has no leader to be fresh against", 503)
                # In the reader thread: a long query must not stall the event loop (and
                # with it this node's Raft heartbeats).
                results = await asyncio.get_running_loop().run_in_executor(
                    self._reader, self.store.query, stmts, opts.timeout
                )
        except _Refused as exc:
            return _error(str(exc), exc.status)
        self.metrics.count("query", results, time.perf_counter() - started)
        return self._respond(request, results, opts, started)

    def _behind_forwarder(self, request: web.Request) -> bool:
        """True if a follower forwarded this read having applied more than this node.

        A follower answers a write once it has applied it, which can be before the
        leader has (its own fsync still pending while two followers' acks committed the
        entry); a read the client then sends to that follower must still see its write.
        """
        try:
            forwarder_applied = int(request.headers.get(FORWARDED_HEADER, "0"))
        except ValueError:
            return False
        return forwarder_applied > self.store.applied_index()

    async def _read_barrier(self, timeout: float) -> None:
        try:
            await self.raft.read_index(timeout=timeout)
        except (RaftError, TimeoutError) as exc:
            raise _Refused(f"linearizable read failed: {exc or type(exc).__name__}") from exc

    async def _forward(self, request: web.Request, stmts: list[Statement]) -> web.Response:
        """Send a weak read to the leader and relay its answer."""
        leader = self._leader()
        if leader is None:
            return _error("no leader is known; retry shortly or use level=none", 503)
        body = json.dumps([s.to_json() for s in stmts])
        url = leader.api_url + request.path
        try:
            async with self._client().post(
                url,
                params=request.query,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    # The leader reads once it has applied what this node has.
                    FORWARDED_HEADER: str(self.store.applied_index()),
                    # The leader checks the caller's credentials again.
                    **{k: v for k, v in request.headers.items() if k.lower() == "authorization"},
                },
            ) as resp:
                payload = await resp.read()
                return web.Response(
                    body=payload, status=resp.status, content_type="application/json"
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(f"forwarding to leader {leader.node_id} failed: {exc}", 503)

    async def backup(self, request: web.Request) -> web.StreamResponse:
        """GET /db/backup: the SQLite file, or a SQL dump with ?fmt=sql."""
        if denied := await self._denied(request, QUERY):
            return denied
        loop = asyncio.get_running_loop()
        if request.query.get("fmt") == "sql":
            dump = await loop.run_in_executor(self._reader, lambda: "".join(self.store.dump_sql()))
            return web.Response(text=dump, content_type="text/plain")
        return web.Response(
            body=await loop.run_in_executor(self._reader, self.store.backup_file),
            content_type="application/octet-stream",
            headers={"Content-Disposition": 'attachment; filename="flaredb.sqlite"'},
        )

    async def load(self, request: web.Request) -> web.Response:
        """POST /db/load: replace the whole database with a SQLite file or SQL dump."""
        if denied := await self._denied(request, EXECUTE):
            return denied
        started = time.perf_counter()
        opts = Options.from_query(request.query)
        if opts.redirect and not self.raft.is_leader:
            return self._redirect(request)
        body = await request.read()
        # Checking and dumping a database file is slow work: keep it off the event loop.
        # The dump passes the same determinism rules as any write (a schema with
        # DEFAULT CURRENT_TIMESTAMP would make later inserts differ per replica).
        try:
            runs = await asyncio.to_thread(
                lambda: _deterministic(group_runs(load_statements(body)))
            )
        except NonDeterministicError as exc:
            return _error(f"load refused: {exc}", 400)
        try:
            results = await self._propose(Command.from_runs(runs, True, LOAD), opts.timeout)
        except _Refused as exc:
            return _error(str(exc), exc.status)
        errors = [r for r in results if isinstance(r, ErrorResult)]
        if errors:
            return _error(f"load rolled back: {errors[0].error}", 400)
        rows = sum(r.rows_affected for r in results if isinstance(r, ExecuteResult))
        return self._respond(request, [ExecuteResult(0, rows)], opts, started)

    # -- cluster and health -------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        """GET /status: this node, its Raft state and its database."""
        st = self.raft.status()
        leader = self._leader()
        doc = {
            "node": {
                "id": self.node_id,
                "start_time": datetime.fromtimestamp(self.started, UTC).isoformat(),
                "uptime": round(time.time() - self.started, 3),
            },
            "store": {
                "node_id": self.node_id,
                "leader": {
                    "node_id": st.leader_id or "",
                    "addr": leader.raft_addr if leader else "",
                    "api_addr": leader.api_url if leader else "",
                },
                "raft": {
                    "state": st.role.capitalize(),
                    "term": st.term,
                    "commit_index": st.commit_index,
                    "applied_index": st.applied_index,
                    "last_log_index": st.last_log_index,
                    "snapshot_index": st.snapshot_index,
                    "voters": len(st.members),
                },
                "db_applied_index": self.store.applied_index(),
                "db_size": self.store.size_bytes(),
                "sqlite3": {"path": str(self.store.path), "version": sqlite3.sqlite_version},
            },
            "http": {"tls": self.client_ssl is not None},
            "build": {"version": __version__},
        }
        return _json(doc, pretty=_flag(request.query, "pretty"))

    async def _reachable(self, peer: PeerInfo) -> bool:
        if peer.node_id == self.node_id:
            return True
        if not peer.api_url:  # a member no config here names yet
            return False
        try:
            async with self._client().get(
                peer.api_url + "/readyz?noleader", timeout=aiohttp.ClientTimeout(total=1.0)
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def nodes(self, request: web.Request) -> web.Response:
        """GET /nodes: every member with its API address, reachability and role."""
        members = {m.node_id: m.address for m in self.raft.status().members}
        peers = [
            self._peer(node_id) or PeerInfo(node_id, "", address)
            for node_id, address in sorted(members.items())
        ]
        reachable = await asyncio.gather(*(self._reachable(p) for p in peers))
        leader = self.raft.leader_id
        entries = [
            {
                "id": p.node_id,
                "api_addr": p.api_url,
                "addr": p.raft_addr,
                "reachable": ok,
                "leader": p.node_id == leader,
                "voter": True,
            }
            for p, ok in zip(peers, reachable, strict=True)
        ]
        pretty = _flag(request.query, "pretty")
        if request.query.get("ver") == "2":
            return _json({"nodes": entries}, pretty=pretty)
        return _json({e["id"]: e for e in entries}, pretty=pretty)

    async def remove(self, request: web.Request) -> web.Response:
        """DELETE /remove ``{"id": "node03"}``: take a node out of the cluster, as rqlite's
        does (any node takes it; the leader commits the change)."""
        if denied := await self._denied(request, REMOVE, CLUSTER):
            return denied
        try:
            body = await request.json()
        except ValueError:
            body = None
        node_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(node_id, str) or not node_id:
            return _error('send the node to remove as JSON: {"id": "node03"}', 400)
        members = {m.node_id for m in self.raft.status().members}
        if node_id not in members:
            return _error(f"{node_id} is not a member (members: {', '.join(sorted(members))})", 404)
        if members == {node_id}:
            return _error(f"{node_id} is the last member; a cluster cannot remove it", 400)
        timeout = Options.from_query(request.query).timeout
        try:
            await self.raft.remove_member(node_id, timeout=timeout)
        except RaftError as exc:
            return _error(f"removing {node_id} did not commit: {exc}", 503)
        log.info("removed %s from the cluster", node_id)
        return web.Response(status=200)

    async def join(self, request: web.Request) -> web.Response:
        """POST /join ``{"id": "node04", "addr": "node04:4002", "voter": true}``: add a
        node, as rqlite's does (any node takes it; the leader commits the change). A node
        that is already a member at that address is answered 200, so a joining node may
        ask again; at another address it is refused (remove it first)."""
        if denied := await self._denied(request, JOIN, CLUSTER):
            return denied
        try:
            body = await request.json()
        except ValueError:
            body = None
        usage = 'send the node to add as JSON: {"id": "node04", "addr": "node04:4002"}'
        if not isinstance(body, dict):
            return _error(usage, 400)
        node_id, addr = body.get("id"), body.get("addr")
        if not isinstance(node_id, str) or not node_id or not isinstance(addr, str) or not addr:
            return _error(usage, 400)
        if body.get("voter", True) is not True:
            return _error("every member votes; non-voters (read-only nodes) are not built", 400)
        members = {m.node_id: m.address for m in self.raft.status().members}
        if members.get(node_id) == addr:
            return web.Response(status=200)
        if node_id in members:
            return _error(
                f"{node_id} is a member at {members[node_id]}; remove it before it joins at {addr}",
                409,
            )
        timeout = Options.from_query(request.query).timeout
        try:
            await self.raft.add_member(node_id, addr, timeout=timeout)
        except RaftError as exc:
            return _error(f"adding {node_id} did not commit: {exc}", 503)
        log.info("%s joined the cluster at %s", node_id, addr)
        return web.Response(status=200)

    async def readyz(self, request: web.Request) -> web.Response:
        """GET /readyz: 200 when the node serves, its store follows the log, and (unless
        ?noleader) it knows a leader."""
        if self.store.failure is not None:
            return web.Response(
                text=f"[+]node ok\n[-]store failed: {self.store.failure}\n", status=503
            )
        lines = ["[+]node ok", "[+]store ok"]
        if "noleader" not in request.query:
            if self.raft.leader_id is None:
                return web.Response(text="[+]node ok\n[-]leader not contactable\n", status=503)
            lines.append("[+]leader ok")
        return web.Response(text="\n".join(lines) + "\n")

    async def prometheus(self, request: web.Request) -> web.Response:
        """GET /metrics in the Prometheus text format."""
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _deterministic(runs: list[Run]) -> list[Run]:
    """The statements as every replica must run them (clock fixed now, on this node).

    The rewrite depends on the SQL text only, so each run (a bulk insert's thousands of
    statements) and each text repeated in other runs is looked at once.
    """
    now = datetime.now(UTC)
    rewritten: dict[str, str] = {}
    out = []
    position = 1  # of the run's first statement, as errors count them
    for run in runs:
        sql = rewritten.get(run.sql)
        if sql is None:
            try:
                sql = rewritten[run.sql] = make_deterministic(run.sql, now)
            except NonDeterministicError as exc:
                raise NonDeterministicError(f"statement {position}: {exc}") from None
        out.append(run if sql == run.sql else Run(sql, run.params))
        position += len(run.params)
    return out


class _Refused(Exception):
    """The request cannot be served; ``status`` is 503 (cluster busy) unless said otherwise."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status
