"""Fixtures: a FlareDB HTTP API on one in-process node over a one-node Raft stand-in."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from netports import free_port

from plasmacloud.flaredb.auth import Guard
from plasmacloud.flaredb.http_api import HttpApi, PeerInfo
from plasmacloud.flaredb.metrics import FlareMetrics
from plasmacloud.flaredb.store import SQLiteStore
from plasmacloud.raft.api import Entry, Member, RaftStatus


class LocalRaft:
    """A one-member 'cluster': every proposal commits at once (no network, no log)."""

    def __init__(self, node_id: str, store: SQLiteStore) -> None:
        self.node_id = node_id
        self.store = store
        self.index = store.applied_index()

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def leader_id(self) -> str | None:
        return self.node_id

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        self.index += 1
        return self.store.apply([Entry(self.index, 1, data)])[0]

    async def read_index(self, timeout: float = 5.0) -> int:
        return self.index

    def status(self) -> RaftStatus:
        return RaftStatus(
            self.node_id,
            "leader",
            1,
            self.node_id,
            self.index,
            self.index,
            self.index,
            0,
            members=(Member(self.node_id, "127.0.0.1:1"),),
        )


@dataclass
class LiveNode:
    url: str
    store: SQLiteStore
    api: HttpApi


@contextlib.asynccontextmanager
async def serve_node(tmp_path: Path, guard: Guard | None = None) -> AsyncIterator[LiveNode]:
    """One node on 127.0.0.1 with a random port, torn down afterwards."""
    host = "127.0.0.1"
    port = free_port(host)
    metrics = FlareMetrics()
    store = SQLiteStore(tmp_path / "flaredb" / "db.sqlite", on_apply=metrics.observe_apply)
    url = f"http://{host}:{port}"
    peers: Sequence[PeerInfo] = [PeerInfo("node01", url, f"{host}:1")]
    raft = LocalRaft("node01", store)
    api = HttpApi("node01", store, raft, peers, metrics, max_body=1 << 20, guard=guard)
    runner = web.AppRunner(api.make_app())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield LiveNode(url, store, api)
    finally:
        await runner.cleanup()
        store.close()


@pytest.fixture
async def live_node(tmp_path: Path) -> AsyncIterator[LiveNode]:
    """One open node (no IAM) on 127.0.0.1."""
    async with serve_node(tmp_path) as node:
        yield node
