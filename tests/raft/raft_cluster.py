"""A 3-node real-I/O Raft cluster in one event loop (loopback TCP, optionally mTLS)."""

from __future__ import annotations

import asyncio
import random
import ssl
from pathlib import Path

from netports import free_port

from plasmacloud.raft.memory import MemoryStateMachine
from plasmacloud.raft.node import RaftConfig, RaftNode


class Cluster:
    """Nodes n1..nN on 127.R.R.1..N (random R so parallel test runs never collide)."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        snapshot_threshold: int = 10_000,
        state_machine: type[MemoryStateMachine] = MemoryStateMachine,
    ) -> None:
        net = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
        self.root = root
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.snapshot_threshold = snapshot_threshold
        self.state_machine = state_machine
        self.net = net
        self.members: dict[str, str] = {}  # the bootstrap configuration
        self.addresses: dict[str, str] = {}  # every node's peer address, joiners included
        for i in range(1, size + 1):
            self.members[f"n{i}"] = self.reserve(f"n{i}")
        self.nodes: dict[str, RaftNode] = {}
        self.sms: dict[str, MemoryStateMachine] = {}

    def reserve(self, node_id: str) -> str:
        """A peer address for ``node_id`` (n<k> lives on 127.R.R.<k>)."""
        host = f"{self.net}.{node_id[1:]}"
        self.addresses[node_id] = f"{host}:{free_port(host)}"
        return self.addresses[node_id]

    def config(self, node_id: str, bootstrap: bool = True) -> RaftConfig:
        host, port = self.addresses[node_id].rsplit(":", 1)
        return RaftConfig(
            node_id=node_id,
            data_dir=self.root / node_id,
            listen_host=host,
            listen_port=int(port),
            # a joiner knows the cluster's addresses but is not a member until added
            members={**self.members, node_id: self.addresses[node_id]},
            bootstrap=bootstrap,
            server_ssl=self.server_ssl,
            client_ssl=self.client_ssl,
            election_timeout=(0.2, 0.4),
            heartbeat_interval=0.04,
            snapshot_threshold=self.snapshot_threshold,
        )

    async def start(self, node_id: str, bootstrap: bool = True) -> RaftNode:
        self.sms[node_id] = self.state_machine()
        node = RaftNode(self.config(node_id, bootstrap), self.sms[node_id])
        self.nodes[node_id] = node
        await node.start()
        return node

    async def start_all(self) -> None:
        for node_id in self.members:
            await self.start(node_id)

    async def stop(self, node_id: str) -> None:
        await self.nodes.pop(node_id).stop()

    async def stop_all(self) -> None:
        for node_id in list(self.nodes):
            await self.stop(node_id)

    async def leader(self, timeout: float = 10.0) -> RaftNode:
        """The running node that is leader (waits for an election if needed)."""
        async with asyncio.timeout(timeout):
            while True:
                for node in self.nodes.values():
                    if node.is_leader:
                        return node
                await asyncio.sleep(0.02)
