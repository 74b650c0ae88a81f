"""Ask every FlareDB node who leads and whom it can reach (for `plasma lab status`)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.common.tls import client_context
from plasmacloud.flaredb.client import node_url

PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class FlareNodeView:
    """One node's answer: its leader, the members it lists and reaches, its Raft role, term
    and indexes, its database's size."""

    node_id: str
    leader: str | None = None
    members: int = 0
    reachable: int = 0
    applied_index: int | None = None  # what the database has applied
    role: str | None = None  # Leader, Follower, Candidate
    term: int | None = None
    commit_index: int | None = None
    raft_applied_index: int | None = None  # log entries applied (the database skips no-ops)
    db_size: int | None = None  # bytes
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _probe(session: aiohttp.ClientSession, cfg: NodeConfig) -> FlareNodeView:
    url = node_url(cfg)
    try:
        async with session.get(url + "/status") as r:
            status = await r.json()
        async with session.get(url + "/nodes?ver=2") as r:
            nodes = (await r.json())["nodes"]
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        return FlareNodeView(cfg.node_id, error=f"{type(exc).__name__}: {exc}".strip(": "))
    store = status.get("store", {})
    raft = store.get("raft", {})
    return FlareNodeView(
        cfg.node_id,
        leader=store.get("leader", {}).get("node_id") or None,
        members=len(nodes),
        reachable=sum(1 for n in nodes if n.get("reachable")),
        applied_index=store.get("db_applied_index"),
        role=raft.get("state"),
        term=raft.get("term"),
        commit_index=raft.get("commit_index"),
        raft_applied_index=raft.get("applied_index"),
        db_size=store.get("db_size"),
    )


async def probe_flaredb(configs: list[NodeConfig], tls: TLSConfig) -> list[FlareNodeView]:
    """Probe the nodes concurrently with the operator's TLS material."""
    ssl_ctx = client_context(tls) if tls.enabled else None
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ssl_ctx or False),
        timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S),
    ) as session:
        return list(await asyncio.gather(*(_probe(session, c) for c in configs)))


def agreed_leader(views: list[FlareNodeView]) -> str | None:
    """The leader every node names, or None if any disagrees or knows none."""
    leaders = {v.leader for v in views}
    return leaders.pop() if len(leaders) == 1 else None
