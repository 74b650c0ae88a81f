"""One Chainfire member: the MVCC store, its Raft group and what the gRPC services share.

The services never talk to Raft directly: writes go through :meth:`ChainfireNode.write`
(size check, quota, propose, error mapping), linearizable reads through
:meth:`ChainfireNode.barrier`, and every response header comes from :meth:`header`.
The node also runs the leader-side lease expiry loop and the NOSPACE quota check.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from plasmacloud.chainfire import errors, system
from plasmacloud.chainfire.auth import Authorizer, touched_ranges
from plasmacloud.chainfire.commands import encode
from plasmacloud.chainfire.metrics import ChainfireMetrics
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.proto import rpc_pb2, system_pb2
from plasmacloud.chainfire.watch import WatchHub
from plasmacloud.common.config import Compaction
from plasmacloud.raft import api as raft_api
from plasmacloud.raft.api import (
    LeaderLostError,
    NoLeaderError,
    NotLeaderError,
    ProposalDroppedError,
    ProposalTimeoutError,
    RaftError,
    ShutdownError,
)

log = logging.getLogger(__name__)

# etcd's default --max-request-bytes (1.5 MiB); larger writes are refused with its error.
MAX_REQUEST_BYTES = 1572864
# The server accepts a little more on the wire so that the check above is ours.
GRPC_MAX_RECEIVE = MAX_REQUEST_BYTES + 512 * 1024
# etcd's default backend quota (2 GiB).
DEFAULT_QUOTA_BYTES = 2 * 1024**3
# how often writes re-measure the database against the quota (a stat per write is waste)
QUOTA_CHECK_INTERVAL = 1.0
# how often mode revision compacts (etcd: every 5 minutes)
REVISION_COMPACTION_INTERVAL_S = 300.0
# etcd 3.4's version string, so tools that check it are satisfied.
ETCD_VERSION = "3.4.23"


class Consensus(raft_api.Consensus, Protocol):
    """What Chainfire needs from the Raft engine: also leader transfers and changes."""

    async def transfer_leadership(
        self, timeout: float | None = None, to: str | None = None
    ) -> str | None: ...

    def add_leader_listener(self, cb: Callable[[str | None, int], None]) -> None: ...


def member_id(node_id: str) -> int:
    """Stable non-zero 63-bit etcd member ID for a node id (same on every node)."""
    digest = hashlib.sha256(f"chainfire-member:{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF or 1


def cluster_id(cluster_name: str) -> int:
    """Stable etcd cluster ID derived from the cluster name."""
    digest = hashlib.sha256(f"chainfire-cluster:{cluster_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF or 1


@dataclass(frozen=True)
class NodeIdentity:
    """Names and URLs this node reports through the Cluster and Maintenance services."""

    node_id: str
    cluster_name: str = "plasmacloud"
    scheme: str = "http"  # "https" when the ports use TLS
    # node_id -> client URLs of every member known from the config
    client_urls: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # "host:port" of a peer port (by IP and by hostname) -> node_id, for MemberAdd
    peer_names: tuple[tuple[str, str], ...] = ()


def raft_error(exc: RaftError) -> errors.EtcdError:
    """The etcd error a client sees for an engine error (all retryable but timeouts)."""
    if isinstance(exc, NoLeaderError | NotLeaderError):
        return errors.NO_LEADER
    if isinstance(exc, ProposalDroppedError):
        return errors.LEADER_CHANGED
    if isinstance(exc, LeaderLostError):
        return errors.TIMEOUT_LEADER_FAIL
    if isinstance(exc, ProposalTimeoutError):
        return errors.TIMEOUT
    if isinstance(exc, ShutdownError):
        return errors.STOPPED
    return errors.EtcdError(errors.NO_LEADER.code, f"etcdserver: {exc}")


class ChainfireNode:
    """Everything the gRPC services of one member share."""

    def __init__(
        self,
        store: MvccStore,
        raft: Consensus,
        identity: NodeIdentity,
        *,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        request_timeout: float = 5.0,
        lease_check_interval: float = 0.5,
        compaction: Compaction | None = None,
        metrics: ChainfireMetrics | None = None,
        client_credentials: grpc.ChannelCredentials | None = None,
        reload_identity: Callable[[], NodeIdentity] | None = None,
    ) -> None:
        """``reload_identity`` reads the identity again (the config file as it is now):
        asked when a member is not in the current one, as one added after this start."""
        self.store = store
        self.raft = raft
        self.identity = identity
        self.member_id = member_id(identity.node_id)
        self.cluster_id = cluster_id(identity.cluster_name)
        self.quota_bytes = quota_bytes
        self.request_timeout = request_timeout
        self.lease_check_interval = lease_check_interval
        # None or retention 0: never compact by itself (etcd's default)
        self.compaction = compaction
        self.hub = WatchHub(store)
        # None: every request is allowed (etcd with auth disabled); see chainfire.auth
        self.authorizer: Authorizer | None = None
        self.metrics = metrics if metrics is not None else ChainfireMetrics(CollectorRegistry())
        # gauges read at scrape time, so they are never stale
        self.metrics.watchers.set_function(lambda: len(self.hub))
        self.metrics.leases.set_function(lambda: len(self.store.timers))
        self.metrics.db_size.set_function(self.store.db_size)
        self.metrics.revision.set_function(lambda: self.store.revision)
        self._term = 0
        self._revoking: set[int] = set()
        self._revokes: set[asyncio.Task[None]] = set()
        self._size = 0
        self._size_at = -QUOTA_CHECK_INTERVAL
        self._tasks: list[asyncio.Task[None]] = []
        # for requests only the leader can serve (membership changes): this node's own
        # client certificate when the client ports use mTLS
        self._client_credentials = client_credentials
        self._leader_channels: dict[str, grpc.aio.Channel] = {}
        self._reload_identity = reload_identity
        raft.add_leader_listener(self._on_leader)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background loops (lease expiry). Call after the Raft node started."""
        self.hub.bind_loop(asyncio.get_running_loop())
        self._tasks.append(asyncio.create_task(self._lease_expiry_loop(), name="lease-expiry"))
        if not self.store.sys_migrated:
            self._tasks.append(asyncio.create_task(self._migrate_loop(), name="sys-migrate"))
        if self.compaction is not None and self.compaction.enabled:
            loop = (
                self._periodic_compaction
                if self.compaction.mode == "periodic"
                else (self._revision_compaction)
            )
            self._tasks.append(asyncio.create_task(loop(self.compaction), name="auto-compaction"))

    async def stop(self) -> None:
        """Stop background loops (and revokes in flight) and end every watch stream."""
        tasks = [*self._tasks, *self._revokes]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.hub.close()
        for channel in self._leader_channels.values():
            await channel.close()
        self._leader_channels.clear()

    def _on_leader(self, leader_id: str | None, term: int) -> None:
        self._term = max(self._term, term)
        if leader_id == self.identity.node_id:
            # a new leader does not know its predecessor's clocks: full TTL for everyone
            self.store.timers.reset(self.store.leases())
            self._revoking.clear()

    # -- shared helpers for the services -----------------------------------------------

    @property
    def term(self) -> int:
        """Latest Raft term seen through leader changes (asks the engine until one is seen)."""
        return self._term or self.raft.status().term

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        """A response header with this member's IDs, the Raft term and a revision."""
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.store.revision if revision is None else revision,
            raft_term=self.term,
        )

    def fill(self, header: rpc_pb2.ResponseHeader) -> None:
        """Complete a header the state machine produced (it only knows the revision)."""
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = self.term

    async def authorize(self, context: grpc.aio.ServicerContext, rpc: str, request: Any) -> None:
        """Ask the installed authorizer (if any) about a request; raises EtcdError to refuse."""
        if self.authorizer is not None:
            await self.authorizer.authorize(context, rpc, touched_ranges(request))

    async def barrier(self) -> None:
        """Wait until local state includes every write committed before this call."""
        try:
            await self.raft.read_index(timeout=self.request_timeout)
        except RaftError as exc:
            raise raft_error(exc) from exc

    async def write(self, request: Message, *, grows: bool = False) -> Any:
        """Replicate one request; return the state machine's response (its header filled
        in, see :meth:`fill`) or raise EtcdError.

        ``grows`` marks requests that add data, refused while over the space quota.
        """
        data = encode(request)
        if len(data) > MAX_REQUEST_BYTES:
            raise errors.REQUEST_TOO_LARGE
        if grows:
            await self._check_quota()
        try:
            result = await self.raft.propose(data, timeout=self.request_timeout)
        except RaftError as exc:
            raise raft_error(exc) from exc
        if isinstance(result, errors.EtcdError):
            raise result
        if result is None:
            raise errors.TIMEOUT  # replayed entry: outcome already applied earlier
        header = getattr(result, "header", None)
        if isinstance(header, rpc_pb2.ResponseHeader):
            self.fill(header)
        return result

    def _db_size(self) -> int:
        """The database size, measured at most every QUOTA_CHECK_INTERVAL seconds."""
        now = time.monotonic()
        if now - self._size_at >= QUOTA_CHECK_INTERVAL:
            self._size, self._size_at = self.store.db_size(), now
        return self._size

    async def _check_quota(self) -> None:
        if self.store.nospace:
            raise errors.NO_SPACE
        size = self._db_size()
        if size > self.quota_bytes:
            log.warning("db size %d exceeds quota %d: raising NOSPACE", size, self.quota_bytes)
            alarm = rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.ACTIVATE,
                memberID=self.member_id,
                alarm=rpc_pb2.NOSPACE,
            )
            with contextlib.suppress(errors.EtcdError):
                await self.write(alarm)
            raise errors.NO_SPACE

    # -- leases ----------------------------------------------------------------------

    async def _lease_expiry_loop(self) -> None:
        """On the leader, revoke leases whose timers ran out (replicated as a revoke)."""
        while True:
            await asyncio.sleep(self.lease_check_interval)
            if not self.raft.is_leader:
                continue
            for lease_id in self.store.timers.expired():
                if lease_id in self._revoking:
                    continue
                self._revoking.add(lease_id)
                task = asyncio.create_task(self._revoke(lease_id))
                self._revokes.add(task)
                task.add_done_callback(self._revokes.discard)

    async def _migrate_loop(self) -> None:
        """Until the system keyspace's marker is applied, the leader proposes the one
        command that moves IAM's legacy public keys there (see chainfire.system).

        Applying it twice is harmless (the second finds the marker), so a new leader
        that has not yet applied its predecessor's proposal may propose again.
        """
        while not self.store.sys_migrated:
            await asyncio.sleep(self.lease_check_interval)
            if not self.raft.is_leader:
                continue
            try:
                resp = await self.write(system_pb2.MigrateRequest(prefix=system.LEGACY_PREFIX))
            except errors.EtcdError as exc:
                log.warning("system keyspace migration not committed yet: %s", exc.message)
                continue
            if resp.moved:
                log.info("moved %d legacy IAM keys into the system keyspace", resp.moved)

    async def _revision_compaction(self, policy: Compaction) -> None:
        """etcd's ``--auto-compaction-mode=revision``: every 5 minutes the leader compacts
        all but the newest ``policy.revisions`` revisions."""
        while True:
            await asyncio.sleep(REVISION_COMPACTION_INTERVAL_S)
            await self._auto_compact(self.store.revision - policy.revisions)

    async def _periodic_compaction(self, policy: Compaction) -> None:
        """etcd's ``--auto-compaction-mode=periodic``: keep ``policy.period_s`` of history.

        As etcd does, the revision is sampled every tenth of the period (at most hourly)
        and the leader compacts up to the revision sampled one period ago; every member
        samples, so a new leader has the history to go on.
        """
        period = policy.period_s
        step = min(period / 10, 3600.0)
        samples: collections.deque[int] = collections.deque(maxlen=round(period / step) + 1)
        while True:
            samples.append(self.store.revision)
            if len(samples) == samples.maxlen:
                await self._auto_compact(samples[0])
            await asyncio.sleep(step)

    async def _auto_compact(self, target: int) -> None:
        """On the leader, compact up to ``target`` if that is past the last compaction."""
        if not self.raft.is_leader or target <= self.store.compact_revision:
            return
        try:
            await self.write(rpc_pb2.CompactionRequest(revision=target))
            log.info("auto-compacted history up to revision %d", target)
        except errors.EtcdError as exc:
            log.warning("auto-compaction at revision %d failed: %s", target, exc.message)

    async def _revoke(self, lease_id: int) -> None:
        try:
            await self.write(rpc_pb2.LeaseRevokeRequest(ID=lease_id))
            log.info("lease %x expired and was revoked", lease_id)
        except errors.EtcdError as exc:
            if exc != errors.LEASE_NOT_FOUND:
                log.warning("revoking expired lease %x failed: %s", lease_id, exc.message)
        finally:
            self._revoking.discard(lease_id)

    # -- members ---------------------------------------------------------------------

    def leader_channel(self) -> grpc.aio.Channel:
        """A client channel to the current leader's client port (cached per leader).

        Raises NO_LEADER when no leader is known or its client URL is not in the config.
        """
        leader = self.raft.leader_id
        urls = self.client_urls(leader) if leader else []
        if leader is None or not urls:
            raise errors.NO_LEADER
        channel = self._leader_channels.get(leader)
        if channel is None:
            target = urls[0].split("://", 1)[-1]
            if urls[0].startswith("https://") and self._client_credentials is not None:
                channel = grpc.aio.secure_channel(target, self._client_credentials)
            else:
                channel = grpc.aio.insecure_channel(target)
            self._leader_channels[leader] = channel
        return channel

    def client_urls(self, node_id: str) -> list[str]:
        """Client URLs of a member as the config lists them (none for unknown members)."""
        urls = dict(self.identity.client_urls).get(node_id)
        if urls is None and self.reload_identity():
            urls = dict(self.identity.client_urls).get(node_id)
        return list(urls or ())

    def reload_identity(self) -> bool:
        """Read the identity again (the config file as it is now), for a member this one
        does not know; False if it cannot be reloaded."""
        if self._reload_identity is None:
            return False
        self.identity = self._reload_identity()
        return True

    def members(self) -> list[rpc_pb2.Member]:
        """The Raft group's members as etcd Member messages, sorted by name."""
        status = self.raft.status()
        out = []
        for m in sorted(status.members, key=lambda m: m.node_id):
            out.append(
                rpc_pb2.Member(
                    ID=member_id(m.node_id),
                    name=m.node_id,
                    peerURLs=[f"{self.identity.scheme}://{m.address}"],
                    clientURLs=self.client_urls(m.node_id),
                )
            )
        return out
