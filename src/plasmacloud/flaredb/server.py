"""A FlareDB node built from a ``cluster-config.json``: SQLite store, Raft group, HTTP API.

Raft listens on ``ports.flaredb_raft`` and the API on ``ports.flaredb_http``, both with
(m)TLS from the config's certificates when ``tls.enabled``. Peers are named by hostname
and resolved through the config (``NodeConfig.resolve``), so no DNS is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import uvloop
from aiohttp import web

from plasmacloud.common.authhook import NodeAuthFactory
from plasmacloud.common.config import NodeConfig
from plasmacloud.common.gc_tuning import tune_gc
from plasmacloud.common.tls import client_context, server_context, watch_certificates
from plasmacloud.flaredb.auth import Guard
from plasmacloud.flaredb.client import Client, node_url
from plasmacloud.flaredb.client import Error as FlareError
from plasmacloud.flaredb.http_api import HttpApi, PeerInfo
from plasmacloud.flaredb.metrics import FlareMetrics
from plasmacloud.flaredb.store import SQLiteStore
from plasmacloud.flaredb.vacuum import vacuum_on_schedule
from plasmacloud.raft.node import RaftNode
from plasmacloud.raft.nodeconfig import raft_config
from plasmacloud.raft.removal import until_stopped_or_removed, wait_until_removed

log = logging.getLogger(__name__)


# seconds between rounds of asking the peers to add a node started with bootstrap false
JOIN_RETRY_S = 1.0


def peer_infos(config: NodeConfig) -> list[PeerInfo]:
    """Where every member the config names answers (API URL and Raft address)."""
    return [
        PeerInfo(p.node_id, node_url(config, p.node_id), f"{p.hostname}:{p.ports.flaredb_raft}")
        for p in config.peers
    ]


class FlareDBServer:
    """One FlareDB node; :meth:`start` and :meth:`stop` it inside a running event loop."""

    def __init__(
        self,
        config: NodeConfig,
        snapshot_threshold: int = 10_000,
        auth: NodeAuthFactory | None = None,
    ) -> None:
        """Build the node; ``snapshot_threshold`` (entries between log compactions) is
        lowered by tests to exercise snapshot catch-up; with ``auth`` (IAM's, from
        ``iam.authz.service_auth``, where the server is composed) every /db/* request is
        made by an IAM principal (a token's, or the one a client certificate's CN names)
        allowed ``flaredb:Query``/``flaredb:Execute``."""
        self.config = config
        data = config.data_path("flaredb")
        self.metrics = FlareMetrics()
        self.store = SQLiteStore(
            data / "db.sqlite", on_apply=self.metrics.observe_apply, on_failure=self._store_failed
        )
        self.server_ssl = server_context(config.tls)
        self.client_ssl = client_context(config.tls)
        self.raft = RaftNode(
            raft_config(
                config,
                "flaredb",
                lambda ports: ports.flaredb_raft,
                server_ssl=self.server_ssl,
                client_ssl=self.client_ssl,
                registry=self.metrics.registry,
                snapshot_threshold=snapshot_threshold,
            ),
            self.store,
        )
        self.auth = auth(config, self.metrics.registry) if auth is not None else None
        self.api = HttpApi(
            config.node_id,
            self.store,
            self.raft,
            peer_infos(config),
            self.metrics,
            self.client_ssl,
            guard=Guard(self.auth) if self.auth is not None else None,
            reload_peers=lambda: peer_infos(config.reloaded()),
        )
        self._runner: web.AppRunner | None = None
        self._background: list[asyncio.Task[None]] = []  # joining, scheduled VACUUM

    def _store_failed(self, reason: str) -> None:
        """The store can no longer follow the log (it raised, and the Raft engine stops
        this node): /readyz is red from now on and says why; so does the metric."""
        self.metrics.apply_failed.set(1)

    @property
    def url(self) -> str:
        return node_url(self.config)

    async def start(self) -> None:
        """Start Raft, then serve the HTTP API."""
        await self.raft.start()
        if self.auth is not None:
            self.auth.start()
        self._runner = web.AppRunner(
            self.api.make_app(), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.config.listen_host,
            self.config.ports.flaredb_http,
            ssl_context=self.server_ssl,
        )
        await site.start()
        log.info("flaredb %s serving %s", self.config.node_id, self.url)
        if not self.config.bootstrap:
            self._background.append(asyncio.create_task(self._join(), name="flaredb-join"))
        every = self.config.flaredb.vacuum_interval_s
        if every > 0:
            vacuum = vacuum_on_schedule(self.raft, every)
            self._background.append(asyncio.create_task(vacuum, name="flaredb-vacuum"))

    async def _join(self) -> None:
        """Ask the config's peers, in turn, to add this node until it is a member (rqlite's
        ``-join``); the leader then sends it the log or a snapshot. A refusal (a peer down,
        no leader yet, the IAM policy) is retried: an operator may also add it
        (``POST /join``, as ``plasma cluster`` does when it adds a node)."""
        me = self.config.me
        addr = f"{me.hostname}:{me.ports.flaredb_raft}"
        others = [p.node_id for p in self.config.peers if p.node_id != me.node_id]
        told: set[str] = set()
        while not any(m.node_id == me.node_id for m in self.raft.status().members):
            for node_id in others:
                peer = Client(node_url(self.config, node_id), self.client_ssl, timeout=5)
                try:
                    await asyncio.to_thread(peer.join, me.node_id, addr)
                    log.info("flaredb %s joined the cluster through %s", me.node_id, node_id)
                    break
                except FlareError as exc:
                    if str(exc) not in told:  # say each reason once, not every round
                        told.add(str(exc))
                        log.warning("flaredb %s: joining through %s: %s", me.node_id, node_id, exc)
            await asyncio.sleep(JOIN_RETRY_S)

    async def wait_removed(self) -> str:
        """Return (the reason) once this node is known to be out of the cluster."""
        others = [p.node_id for p in self.config.peers if p.node_id != self.config.node_id]
        return await wait_until_removed(self.raft, self.config.node_id, others, self._members_of)

    async def _members_of(self, node_id: str) -> list[str] | None:
        """The members a peer lists on ``/nodes`` if it knows a leader, else None."""
        peer = Client(node_url(self.config, node_id), self.client_ssl, timeout=2)
        try:
            nodes = await asyncio.to_thread(peer.nodes)
        except (FlareError, ValueError, KeyError):
            return None
        if not any(n.get("leader") for n in nodes):
            return None
        return [str(n["id"]) for n in nodes]

    async def stop(self) -> None:
        """Stop serving, stop Raft, close the database (safe to call twice)."""
        for task in self._background:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._background = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.raft.stop()
        if self.auth is not None:
            await self.auth.close()
        self.store.close()


# Seconds a stop waits for requests in flight. On a healthy node they finish in
# milliseconds; a write waiting for a quorum that is gone (a survivor of a quorum loss,
# stopped to be recovered) would otherwise hold the stop until aiohttp's 60 s default, and
# the lab kills the process after 10 s.
SHUTDOWN_GRACE_S = 2.0


async def serve(
    config: NodeConfig,
    stop: asyncio.Event | None = None,
    snapshot_threshold: int = 10_000,
    auth: NodeAuthFactory | None = None,
) -> None:
    """Run a node until ``stop`` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = FlareDBServer(config, snapshot_threshold, auth)
    reloads = asyncio.create_task(watch_certificates(), name="tls-reload")
    try:
        await server.start()
        reason = await until_stopped_or_removed(stop, server.wait_removed())
        if reason is not None:
            log.error(
                "flaredb %s was removed from the cluster (%s); stopping", config.node_id, reason
            )
    finally:
        reloads.cancel()
        await server.stop()


def run(
    config_path: Path,
    snapshot_threshold: int = 10_000,
    auth: NodeAuthFactory | None = None,
) -> None:
    """Foreground entry point of ``plasma flaredb serve``."""
    config = NodeConfig.load(config_path)
    tune_gc()  # the modules are imported by now
    # uvloop, as Chainfire (docs/adr/003): its TLS transport is native code, asyncio's
    # sslproto is Python, and a bulk insert moves megabytes through TLS three times on
    # the leader (the request, and the entry to each follower).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, snapshot_threshold=snapshot_threshold, auth=auth))
