"""The overview: every node x service (Chainfire, FlareDB, IAM) with its Raft state.

The cluster is asked through the functions ``plasma lab status --json`` uses
(:func:`~plasmacloud.cluster.probe.probe_cluster` and
:func:`~plasmacloud.flaredb.probe.probe_flaredb`), and their documents are served as that
command prints them (``nodes`` and ``flaredb``), so the two cannot disagree. ``rows`` is
the same answer flattened for the page: one row per node and service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from plasmacloud.cluster.probe import ClusterView, NodeView
from plasmacloud.cluster.services import CHAINFIRE, FLAREDB, IAM
from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.flaredb.probe import FlareNodeView, agreed_leader, probe_flaredb

# Probes younger than this are served again: several tabs polling do not multiply the
# load on the cluster, and a killed node still shows within a poll or two.
MAX_AGE_S = 1.0


@dataclass(frozen=True)
class Row:
    """One service on one node, as the overview table shows it."""

    node: str
    service: str
    up: bool
    role: str | None = None  # "leader", "follower", "candidate"; None: no Raft group
    term: int | None = None
    commit_index: int | None = None
    applied_index: int | None = None
    lag: int | None = None  # entries behind the leader's commit index
    db_size: int | None = None  # bytes
    error: str | None = None


def _health(v: NodeView, service: str) -> tuple[bool, str | None]:
    ok, detail = v.health.get(service, (False, "not probed"))
    return ok, None if ok else detail


class RaftAnswer(NamedTuple):
    """What one node said about its part in a Raft group (``role`` None: down, or it
    knows no leader)."""

    node: str
    up: bool
    role: str | None
    term: int | None
    commit_index: int | None
    applied_index: int | None
    db_size: int | None
    error: str | None


def raft_rows(service: str, answers: list[RaftAnswer]) -> list[Row]:
    """One row per answer; lag counts from the leader with the highest term (a deposed
    leader may still believe it leads until it hears otherwise)."""
    leaders = [a for a in answers if a.role == "leader"]
    leader = max(leaders, key=lambda a: a.term or 0, default=None)
    commit = leader.commit_index if leader else None
    return [
        Row(
            node=a.node,
            service=service,
            up=a.up,
            role=a.role,
            term=a.term,
            commit_index=a.commit_index,
            applied_index=a.applied_index,
            lag=commit - a.applied_index
            if a.up and commit is not None and a.applied_index is not None
            else None,
            db_size=a.db_size,
            error=a.error,
        )
        for a in answers
    ]


def _chainfire_role(v: NodeView) -> str | None:
    if not v.leader_id:
        return None  # it knows no leader: an election, or it is cut off
    return "leader" if v.leader_id == v.member_id else "follower"


def chainfire_rows(view: ClusterView) -> list[Row]:
    """A node leads if it names itself leader."""
    answers = []
    for v in view.nodes:
        ok, detail = _health(v, CHAINFIRE.name)
        up = ok and v.error is None
        alarms = "; ".join(v.alarms) or None
        error = v.error or detail or alarms or (None if v.leader_id else "knows no leader")
        role = _chainfire_role(v) if up else None
        indexes = (v.raft_term, v.raft_index, v.raft_applied_index, v.db_size)
        answers.append(RaftAnswer(v.node_id, up, role, *indexes, error))
    return raft_rows(CHAINFIRE.name, answers)


def flaredb_rows(view: ClusterView, flare: list[FlareNodeView]) -> list[Row]:
    """FlareDB's own Raft group: role and indexes from each node's /status."""
    health = {v.node_id: _health(v, FLAREDB.name) for v in view.nodes}
    answers = []
    for f in flare:
        ok, detail = health.get(f.node_id, (False, "not probed"))
        up = ok and f.error is None
        role = f.role.lower() if up and f.role else None
        indexes = (f.term, f.commit_index, f.raft_applied_index, f.db_size)
        answers.append(RaftAnswer(f.node_id, up, role, *indexes, f.error or detail))
    return raft_rows(FLAREDB.name, answers)


def iam_rows(view: ClusterView) -> list[Row]:
    """IAM keeps its records in Chainfire: no Raft group of its own, only its health."""
    rows = []
    for v in view.nodes:
        ok, detail = _health(v, IAM.name)
        rows.append(Row(v.node_id, IAM.name, ok, error=detail))
    return rows


def overview_doc(view: ClusterView, flare: list[FlareNodeView] | None) -> dict[str, Any]:
    """The status documents as ``plasma lab status --json`` prints them, the rows, and
    the nodes leading each Raft group."""
    names = {s for v in view.nodes for s in v.health}
    rows = chainfire_rows(view)
    doc: dict[str, Any] = {
        "ready": view.ready,
        "leader": view.leader_node,
        "nodes": [{"node": v.node_id, **v.as_json()} for v in view.nodes],
    }
    if flare is not None:
        doc["flaredb"] = {"leader": agreed_leader(flare), "nodes": [v.to_json() for v in flare]}
        rows += flaredb_rows(view, flare)
    if IAM.name in names:
        rows += iam_rows(view)
    doc["leaders"] = {
        s: sorted(r.node for r in rows if r.service == s and r.role == "leader")
        for s in (CHAINFIRE.name, FLAREDB.name)
        if any(r.service == s for r in rows)
    }
    doc["rows"] = [asdict(r) for r in rows]
    return doc


async def probe_overview(target: ClusterTarget) -> dict[str, Any]:
    """Probe the cluster as ``plasma lab status`` does; the overview document."""
    view, flare = await asyncio.gather(
        target.probe(),
        probe_flaredb(target.configs, target.tls) if target.runs(FLAREDB.name) else _none(),
    )
    doc = overview_doc(view, flare)
    doc["probed_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return doc


async def _none() -> None:
    return None


class Overview:
    """The latest overview, probed again once it is older than :data:`MAX_AGE_S`; one
    probe at a time however many requests ask."""

    def __init__(self, target: ClusterTarget) -> None:
        self.target = target
        self._lock = asyncio.Lock()
        self._doc: dict[str, Any] | None = None
        self._at = 0.0

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            if self._doc is None or time.monotonic() - self._at > MAX_AGE_S:
                self._doc = await probe_overview(self.target)
                self._at = time.monotonic()
            return self._doc
