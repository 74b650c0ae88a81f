"""A whole Chainfire member built from a node's ``cluster-config.json``.

Client port (etcd gRPC), peer port (the Raft transport) and metrics port (HTTP), data
under ``<data_dir>/chainfire``, mTLS on the client and peer ports when the config's TLS
section is enabled. Peers are addressed by hostname and resolved through the config
(``NodeConfig.resolve``), so a cluster needs no DNS.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import CollectorRegistry

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.client import ChainfireClient
from plasmacloud.chainfire.frontend.dispatch import MethodRegistry
from plasmacloud.chainfire.frontend.supervisor import Frontends, socket_path
from plasmacloud.chainfire.http import start_http
from plasmacloud.chainfire.iam_auth import IamAuthorizer
from plasmacloud.chainfire.listen import grpc_server
from plasmacloud.chainfire.metrics import ChainfireMetrics
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.node import (
    DEFAULT_QUOTA_BYTES,
    ChainfireNode,
    Consensus,
    NodeIdentity,
)
from plasmacloud.chainfire.proto import (
    rpc_pb2_grpc,
    system_pb2_grpc,
    v3election_pb2_grpc,
    v3lock_pb2_grpc,
)
from plasmacloud.chainfire.services.auth import AuthServicer
from plasmacloud.chainfire.services.cluster import ClusterServicer
from plasmacloud.chainfire.services.election import ElectionServicer
from plasmacloud.chainfire.services.kv import KVServicer
from plasmacloud.chainfire.services.lease import LeaseServicer
from plasmacloud.chainfire.services.lock import LockServicer
from plasmacloud.chainfire.services.maintenance import MaintenanceServicer
from plasmacloud.chainfire.services.system import SystemKVServicer
from plasmacloud.chainfire.services.watch import DEFAULT_PROGRESS_INTERVAL, WatchServicer
from plasmacloud.common.authhook import NodeAuth, NodeAuthFactory
from plasmacloud.common.config import Compaction, NodeConfig
from plasmacloud.common.tls import grpc_pem_material, watch_certificates
from plasmacloud.raft.removal import until_stopped_or_removed, wait_until_removed

log = logging.getLogger(__name__)


# etcd 3.4's --snapshot-count. A snapshot serializes the whole database on the event loop
# of every member at the same index (a cluster-wide pause that grows with the history
# kept); the engine's default of 10,000 paused a busy cluster every few seconds.
SNAPSHOT_THRESHOLD = 100_000


def identity_from_config(config: NodeConfig) -> NodeIdentity:
    """Names and URLs of every member as the config describes them."""
    scheme = "https" if config.tls.enabled else "http"
    client_urls = tuple(
        (p.node_id, (f"{scheme}://{p.ip}:{p.ports.chainfire_client}",)) for p in config.peers
    )
    peer_names = tuple(
        (f"{host}:{p.ports.chainfire_peer}", p.node_id)
        for p in config.peers
        for host in (str(p.ip), p.hostname)
    )
    return NodeIdentity(
        node_id=config.node_id,
        cluster_name=config.cluster_name,
        scheme=scheme,
        client_urls=client_urls,
        peer_names=peer_names,
    )


def add_servicers(
    server: grpc.aio.Server, node: ChainfireNode, *, tls: bool = False, **watch_opts: Any
) -> None:
    """Register every etcd service of one member on a gRPC server, and the system
    keyspace's (members only when ``tls``: the port verifies client certificates)."""
    rpc_pb2_grpc.add_KVServicer_to_server(KVServicer(node), server)
    rpc_pb2_grpc.add_WatchServicer_to_server(WatchServicer(node, **watch_opts), server)
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseServicer(node), server)
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(node), server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceServicer(node), server)
    rpc_pb2_grpc.add_AuthServicer_to_server(AuthServicer(node), server)
    v3lock_pb2_grpc.add_LockServicer_to_server(LockServicer(node), server)
    v3election_pb2_grpc.add_ElectionServicer_to_server(ElectionServicer(node), server)
    system_pb2_grpc.add_SystemKVServicer_to_server(
        SystemKVServicer(node, require_member_cert=tls), server
    )


class DataDirBusy(OSError):
    """Another process already serves from this data directory."""


def lock_data_dir(data: Path) -> int:
    """Hold an exclusive lock on the data directory for the life of the process.

    Two members on one directory would corrupt the Raft log and the store, so the
    second one refuses to start. Returns the lock file's descriptor.
    """
    fd = os.open(data / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DataDirBusy(
            f"{data} is in use by another chainfire process (pid {owner}); stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def channel_credentials(config: NodeConfig) -> grpc.ChannelCredentials | None:
    """This node's mTLS client credentials for calling other members' client ports."""
    if not config.tls.enabled:
        return None
    ca, cert, key = grpc_pem_material(config.tls)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


@dataclass
class ChainfireServer:
    """One running member: store, Raft node, gRPC services and the metrics endpoint."""

    config: NodeConfig
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    # applied entries between Raft snapshots; None: SNAPSHOT_THRESHOLD
    snapshot_threshold: int | None = None
    # automatic compaction; None: the node config's (cluster.yaml's chainfire block)
    compaction: Compaction | None = None
    # seconds between progress notifications to idle watchers that asked for them
    # (etcd's --experimental-watch-progress-notify-interval, 10 minutes by default)
    watch_progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    # auth on when given: builds the hook every call is checked by (chainfire.iam_auth;
    # IAM's, from iam.authz.service_auth, where the server is composed)
    auth: NodeAuthFactory | None = None
    # client-facing gRPC in this many worker processes (chainfire.frontend); 0: in this one
    frontends: int = 0
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._lock_fd: int | None = None
        self.node: ChainfireNode | None = None
        self._raft: Any = None
        self._grpc: grpc.aio.Server | None = None
        self._frontends: Frontends | None = None
        self._http: web.AppRunner | None = None
        self._store: MvccStore | None = None
        self._auth: NodeAuth | None = None

    def _raft_node(self, state_machine: Any) -> Any:
        # imported here: the engine is a sibling package with its own start-up cost
        from plasmacloud.raft.node import RaftNode
        from plasmacloud.raft.nodeconfig import raft_config

        threshold = self.snapshot_threshold
        raft = raft_config(
            self.config,
            "chainfire",
            lambda ports: ports.chainfire_peer,
            registry=self.registry,
            snapshot_threshold=SNAPSHOT_THRESHOLD if threshold is None else threshold,
        )
        return RaftNode(raft, state_machine)

    async def start(self) -> None:
        """Open the store, start Raft, then the client and metrics ports."""
        cfg = self.config
        data = cfg.data_path("chainfire")
        data.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_data_dir(data)
        metrics = ChainfireMetrics(self.registry)
        self._store = MvccStore(data / "kv.db")
        self._raft = self._raft_node(self._store)
        raft: Consensus = self._raft
        self.node = ChainfireNode(
            self._store,
            raft,
            identity_from_config(cfg),
            quota_bytes=self.quota_bytes,
            compaction=self.compaction or cfg.chainfire.auto_compaction,
            metrics=metrics,
            client_credentials=channel_credentials(cfg),
            reload_identity=lambda: identity_from_config(cfg.reloaded()),
        )
        if self.auth is not None:
            self._auth = self.auth(cfg, self.registry)
            self._auth.start()
            self.node.authorizer = IamAuthorizer(self._auth)
        await self._raft.start()
        await self.node.start()
        if self.frontends:
            address = await self._start_frontends(data, metrics)
        else:
            self._grpc, address = grpc_server(cfg)
            self._add_servicers(self._grpc)
            await self._grpc.start()
        self._http = await start_http(self.node, cfg.listen_host, cfg.ports.chainfire_metrics)
        log.info(
            "chainfire %s serving clients on %s (tls=%s), peers on %s:%d, metrics on %s:%d",
            cfg.node_id,
            address,
            cfg.tls.enabled,
            cfg.listen_host,
            cfg.ports.chainfire_peer,
            cfg.listen_host,
            cfg.ports.chainfire_metrics,
        )

    def _add_servicers(self, server: grpc.aio.Server | MethodRegistry) -> None:
        assert self.node is not None
        add_servicers(
            server,  # type: ignore[arg-type]  # a registry takes what a server takes
            self.node,
            tls=self.config.tls.enabled,
            progress_interval=self.watch_progress_interval,
        )

    async def _start_frontends(self, data: Path, metrics: ChainfireMetrics) -> str:
        source = self.config.source
        if source is None:
            raise ValueError("frontend workers read the node's config file: load it from one")
        registry = MethodRegistry()
        self._add_servicers(registry)
        self._frontends = Frontends(self.frontends, source, socket_path(data), registry, metrics)
        await self._frontends.start()
        cfg = self.config
        return f"{cfg.listen_host}:{cfg.ports.chainfire_client} ({self.frontends} frontends)"

    async def wait_removed(self) -> str:
        """Return (the reason) once this member is known to be out of the cluster."""
        assert self._raft is not None, "start() first"
        cfg = self.config
        others = [p.node_id for p in cfg.peers if p.node_id != cfg.node_id]
        return await wait_until_removed(self._raft, cfg.node_id, others, self._members_of)

    async def _members_of(self, node_id: str) -> list[str] | None:
        """The members a peer lists, with this node's certificate, if it knows a leader."""
        peer = self.config.peer(node_id)
        target = f"{peer.ip}:{peer.ports.chainfire_client}"
        async with ChainfireClient([target], self.config.tls, timeout=2) as client:
            try:
                if not (await client.status()).leader:
                    return None
                return [m.name for m in await client.member_list()]
            except errors.EtcdError:
                return None

    async def stop(self) -> None:
        """Stop accepting clients, then stop Raft and close the store."""
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._frontends is not None:
            await self._frontends.stop()
        if self._http is not None:
            await self._http.cleanup()
        if self.node is not None:
            await self.node.stop()
        if self._raft is not None:
            await self._raft.stop()
        if self._auth is not None:
            await self._auth.close()
        if self._store is not None:
            self._store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
        log.info("chainfire %s stopped", self.config.node_id)


async def serve(config: NodeConfig, stop: asyncio.Event, **options: Any) -> None:
    """Run a member until ``stop`` is set (the CLI sets it on SIGTERM/SIGINT).

    ``options`` are :class:`ChainfireServer` fields (quota_bytes, snapshot_threshold,
    compaction, watch_progress_interval, auth, frontends).
    """
    server = ChainfireServer(config, **options)
    reloads = asyncio.create_task(watch_certificates(), name="tls-reload")
    try:
        await server.start()
        reason = await until_stopped_or_removed(stop, server.wait_removed())
        if reason is not None:
            # etcd: "the member has been permanently removed from the cluster"
            log.error(
                "chainfire %s removed from the cluster (%s); stopping", config.node_id, reason
            )
    finally:
        reloads.cancel()
        await server.stop()
