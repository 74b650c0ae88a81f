"""Shared fixtures for Chainfire tests: a store driven through encoded commands."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from plasmacloud.chainfire.commands import encode
from plasmacloud.chainfire.leases import LeaseTimers
from plasmacloud.chainfire.listen import GRPC_OPTIONS
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.node import ChainfireNode, NodeIdentity
from plasmacloud.chainfire.proto import rpc_pb2_grpc
from plasmacloud.chainfire.server import add_servicers
from plasmacloud.raft.api import Entry, Member, NoLeaderError, RaftStatus


class Applier:
    """Feeds requests to a store as consecutive committed log entries."""

    def __init__(self, store: MvccStore) -> None:
        self.store = store
        self.index = store.applied_index()

    def __call__(self, *requests: Message) -> Any:
        """Apply requests as one batch; return the single result or the list."""
        entries = []
        for req in requests:
            self.index += 1
            entries.append(Entry(self.index, 1, encode(req)))
        results = self.store.apply(entries)
        return results[0] if len(results) == 1 else results


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MvccStore]:
    s = MvccStore(tmp_path / "kv.db")
    yield s
    s.close()


@pytest.fixture
def apply(store: MvccStore) -> Applier:
    return Applier(store)


class LocalRaft:
    """A single-member stand-in for RaftNode: proposals apply at once, reads need no barrier."""

    def __init__(self, store: MvccStore, node_id: str = "node01", address: str = "") -> None:
        self.store = store
        self.node_id = node_id
        self.index = store.applied_index()
        self.members = {node_id: address or "127.0.0.1:2380"}
        self.listeners: list[Any] = []
        self.leader: str | None = node_id

    @property
    def is_leader(self) -> bool:
        return self.leader == self.node_id

    @property
    def leader_id(self) -> str | None:
        return self.leader

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        if self.leader is None:
            raise NoLeaderError("no leader")
        self.index += 1
        return self.store.apply([Entry(self.index, 1, data)])[0]

    async def read_index(self, timeout: float = 5.0) -> None:
        if self.leader is None:
            raise NoLeaderError("no leader")

    async def add_member(self, node_id: str, address: str) -> None:
        self.members[node_id] = address

    async def remove_member(self, node_id: str) -> None:
        del self.members[node_id]

    def status(self) -> RaftStatus:
        return RaftStatus(
            node_id=self.node_id,
            role="leader" if self.is_leader else "follower",
            term=1,
            leader_id=self.leader,
            commit_index=self.index,
            applied_index=self.index,
            last_log_index=self.index,
            snapshot_index=0,
            members=tuple(Member(n, a) for n, a in self.members.items()),
        )

    def add_leader_listener(self, cb: Any) -> None:
        self.listeners.append(cb)
        cb(self.leader, 1)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    """A single in-process member on a real gRPC port, with stubs for every service."""

    store: MvccStore
    raft: LocalRaft
    node: ChainfireNode
    clock: FakeClock
    address: str
    channel: grpc.aio.Channel
    kv: rpc_pb2_grpc.KVStub
    watch: rpc_pb2_grpc.WatchStub
    lease: rpc_pb2_grpc.LeaseStub
    cluster: rpc_pb2_grpc.ClusterStub
    maintenance: rpc_pb2_grpc.MaintenanceStub
    auth: rpc_pb2_grpc.AuthStub


_HOST_COUNTER = itertools.cycle(range(20, 250))


def loopback_host() -> str:
    """A distinct 127.0.0.x per server so tests never collide on ports."""
    return f"127.0.0.{next(_HOST_COUNTER)}"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    clock = FakeClock()
    store = MvccStore(tmp_path / "kv.db", LeaseTimers(clock))
    host = loopback_host()
    raft = LocalRaft(store, address=f"{host}:2380")
    identity = NodeIdentity(
        node_id="node01",
        client_urls=(("node01", (f"http://{host}:2379",)),),
        peer_names=((f"{host}:2390", "node04"),),
    )
    node = ChainfireNode(store, raft, identity, quota_bytes=1 << 30, lease_check_interval=0.02)
    await node.start()
    server = grpc.aio.server(options=GRPC_OPTIONS)
    add_servicers(server, node, progress_interval=0.2)
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    address = f"{host}:{port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Served(
            store,
            raft,
            node,
            clock,
            address,
            channel,
            rpc_pb2_grpc.KVStub(channel),
            rpc_pb2_grpc.WatchStub(channel),
            rpc_pb2_grpc.LeaseStub(channel),
            rpc_pb2_grpc.ClusterStub(channel),
            rpc_pb2_grpc.MaintenanceStub(channel),
            rpc_pb2_grpc.AuthStub(channel),
        )
    finally:
        await channel.close()
        await server.stop(grace=None)
        await node.stop()
        store.close()
