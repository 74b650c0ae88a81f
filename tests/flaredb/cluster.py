"""A 3-node FlareDB cluster inside the test's event loop (real Raft over loopback TCP)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from plasmacloud.common.config import NodeConfig, PeerConfig, ServicePorts, TLSConfig
from plasmacloud.flaredb.server import FlareDBServer
from plasmacloud.iam.authz import service_auth

from .conftest import free_port


def make_configs(
    tmp_path: Path, hosts: tuple[str, ...], tls: TLSConfig | None = None
) -> list[NodeConfig]:
    """One config per node, each with its own free ports on its own loopback address."""
    peers = []
    for i, host in enumerate(hosts, start=1):
        ports = [free_port(host) for _ in range(6)]
        peers.append(
            PeerConfig(
                node_id=f"node{i:02d}",
                hostname=f"node{i:02d}",
                ip=IPv4Address(host),
                ports=ServicePorts(
                    chainfire_client=ports[0],
                    chainfire_peer=ports[1],
                    chainfire_metrics=ports[2],
                    flaredb_http=ports[3],
                    flaredb_raft=ports[4],
                    iam_http=ports[5],
                ),
            )
        )
    return [
        NodeConfig(
            node_id=p.node_id,
            hostname=p.hostname,
            ip=p.ip,
            peers=peers,
            ports=p.ports,
            tls=tls or TLSConfig(enabled=False),
            data_dir=tmp_path / p.node_id,
        )
        for p in peers
    ]


@dataclass
class Cluster:
    configs: list[NodeConfig]
    snapshot_threshold: int = 10_000
    iam_urls: list[str] = field(default_factory=list)
    servers: dict[str, FlareDBServer] = field(default_factory=dict)

    def url(self, node_id: str) -> str:
        cfg = next(c for c in self.configs if c.node_id == node_id)
        return f"http://{cfg.ip}:{cfg.ports.flaredb_http}"

    @property
    def ids(self) -> list[str]:
        return [c.node_id for c in self.configs]

    async def start(self, node_id: str) -> None:
        cfg = next(c for c in self.configs if c.node_id == node_id)
        server = FlareDBServer(cfg, self.snapshot_threshold, service_auth("flaredb", self.iam_urls))
        await server.start()
        self.servers[node_id] = server

    async def stop(self, node_id: str) -> None:
        server = self.servers.pop(node_id, None)
        if server is not None:
            await server.stop()

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(i) for i in self.ids))

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(i) for i in list(self.servers)))

    async def leader(self, timeout: float = 15.0) -> str:
        """The node every running member agrees leads."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = {s.raft.leader_id for s in self.servers.values()}
            if len(ids) == 1 and None not in ids:
                leader = ids.pop()
                if leader in self.servers and self.servers[leader].raft.is_leader:
                    return str(leader)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no agreed leader within {timeout}s")

    def followers(self, leader: str) -> list[str]:
        return [i for i in self.servers if i != leader]

    async def wait_applied(self, node_id: str, index: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        store = self.servers[node_id].store
        while store.applied_index() < index:
            if time.monotonic() > deadline:
                raise AssertionError(f"{node_id} applied {store.applied_index()} < {index}")
            await asyncio.sleep(0.05)

    async def wait_all_applied(self, timeout: float = 15.0) -> None:
        """Wait until every running node has applied all that any node has applied.

        A write is acknowledged by the node that received it once that node has applied
        it, which may be before the leader has: the leader applies only what its own log
        has made durable, so two followers' acks can commit an entry and a follower apply
        it while the leader's fsync is still pending. So the last acknowledged write is
        covered by the highest applied index of any node, not by the leader's.
        """
        index = max(s.store.applied_index() for s in self.servers.values())
        for node_id in self.servers:
            await self.wait_applied(node_id, index, timeout)

    def dumps(self) -> dict[str, list[str]]:
        return {i: list(s.store.dump_sql()) for i, s in self.servers.items()}


async def call(
    method: str, url: str, body: Any = None, allow_redirects: bool = True
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    data = json.dumps(body) if body is not None else None
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method,
            url,
            data=data,
            allow_redirects=allow_redirects,
            headers={"Content-Type": "application/json"},
        ) as resp,
    ):
        text = await resp.text()
        try:
            doc = json.loads(text)
        except ValueError:
            doc = text
        return resp.status, doc, resp.headers
