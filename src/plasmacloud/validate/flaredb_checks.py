"""FlareDB's part of the checklist: members, quorum, and CRUD read back linearizably.

Every call goes through :class:`plasmacloud.flaredb.client.Client` (the wire models the
server uses), run in a thread because that client is synchronous. With auth on, the
operator's certificate speaks for the IAM principal its CN names (an admin in the lab),
so no token is needed.
"""

from __future__ import annotations

import asyncio
import secrets

from plasmacloud.cluster.probe import ClusterView
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.common.tls import client_context
from plasmacloud.flaredb.client import Client, Error, node_url
from plasmacloud.flaredb.models import QueryResult, Statement
from plasmacloud.flaredb.probe import agreed_leader, probe_flaredb
from plasmacloud.validate.crud import CrudOps, crud_round
from plasmacloud.validate.results import RPC_TIMEOUT_S, NodeResult

TABLE = "plasmacloud_validate"
_CREATE = Statement(f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, value TEXT)")


def client(cfg: NodeConfig, tls: TLSConfig) -> Client:
    """A FlareDB client for one node, as the operator."""
    return Client(node_url(cfg), client_context(tls), timeout=RPC_TIMEOUT_S)


def write_row(cfg: NodeConfig, tls: TLSConfig, row_id: str, value: str) -> None:
    """Insert (or replace) one row of the validation table through ``cfg``'s node."""
    client(cfg, tls).execute(
        [_CREATE, Statement(f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?)", (row_id, value))]
    )


def read_row(cfg: NodeConfig, tls: TLSConfig, row_id: str) -> str | None:
    """The row's value read with ``level=linearizable`` on ``cfg``'s node (None: absent)."""
    (result,) = client(cfg, tls).query(
        [Statement(f"SELECT value FROM {TABLE} WHERE id = ?", (row_id,))], level="linearizable"
    )
    if not isinstance(result, QueryResult):
        raise Error(f"unexpected answer {result}")
    return str(result.values[0][0]) if result.values else None


def _failed(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _crud_one(t: ClusterTarget, cfg: NodeConfig) -> NodeResult:
    row_id = f"{cfg.node_id}-{secrets.token_hex(4)}"
    value = secrets.token_hex(8)

    async def write() -> str:
        await asyncio.to_thread(write_row, cfg, t.tls, row_id, value)
        return "insert here"

    ops = CrudOps[str, Error](
        write=write,
        # the client is synchronous: each call runs in a thread to keep the loop free
        read=lambda node: asyncio.to_thread(read_row, node, t.tls, row_id),
        delete=lambda: asyncio.to_thread(delete_rows, cfg, t.tls, [row_id]),
        failure=Error,
        describe=_failed,
        describe_read=lambda exc: f"error: {exc}",
    )
    return await crud_round(t, cfg, value, ops)


async def check_crud(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """Insert through each node, read back with level=linearizable on every node, delete."""
    return [await _crud_one(t, cfg) for cfg in t.configs]


def _members(cfg: NodeConfig, tls: TLSConfig) -> list[dict[str, object]]:
    return client(cfg, tls).nodes()


async def check_members(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """Every node's /nodes lists exactly the configured members."""
    want = sorted(p.node_id for p in t.configs[0].peers)
    out = []
    for cfg in t.configs:
        try:
            nodes = await asyncio.to_thread(_members, cfg, t.tls)
        except Error as exc:
            out.append(NodeResult(cfg.node_id, False, _failed(exc)))
            continue
        ids = sorted(str(n["id"]) for n in nodes)
        out.append(NodeResult(cfg.node_id, ids == want, f"{len(ids)} members: {', '.join(ids)}"))
    return out


async def check_quorum(t: ClusterTarget, view: ClusterView) -> list[NodeResult]:
    """One leader named by every answering node (a majority must answer), and each node
    reaches a majority of the voters."""
    views = await probe_flaredb(t.configs, t.tls)
    majority = len(t.configs[0].peers) // 2 + 1
    answering = [v for v in views if not v.error]
    # a dead node fails its own row; the others still have quorum if a majority answers
    # and every answering node names the same leader
    agreed = agreed_leader(answering) if len(answering) >= majority else None
    out = []
    for v in views:
        if v.error:
            out.append(NodeResult(v.node_id, False, v.error))
            continue
        evidence = f"leader {v.leader or 'none'}, {v.reachable}/{v.members} voters reachable"
        if agreed is None:
            evidence += " (no leader agreed by a majority)"
        elif v.reachable < majority:
            evidence += f" (fewer than a majority of {majority})"
        ok = agreed is not None and v.reachable >= majority
        out.append(NodeResult(v.node_id, ok, evidence))
    return out


def delete_rows(cfg: NodeConfig, tls: TLSConfig, row_ids: list[str]) -> int:
    """Delete rows of the validation table through ``cfg``'s node; how many went."""
    results = client(cfg, tls).execute(
        [Statement(f"DELETE FROM {TABLE} WHERE id = ?", (row_id,)) for row_id in row_ids]
    )
    return sum(getattr(r, "rows_affected", 0) for r in results)
