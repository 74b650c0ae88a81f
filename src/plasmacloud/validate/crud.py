"""The CRUD round both stores' checks share: write through one node, read back on every
node, delete through the same node, and see the item gone everywhere.

Chainfire (keys over gRPC) and FlareDB (rows over HTTP) differ only in how they write,
read and delete one item and in how they word their failures; :class:`CrudOps` carries
those differences so that both ``crud`` checks judge and word their evidence alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.common.config import NodeConfig
from plasmacloud.validate.results import NodeResult

V = TypeVar("V")
E = TypeVar("E", bound=Exception)


@dataclass(frozen=True)
class CrudOps(Generic[V, E]):
    """How one store handles the probe item of one node's round."""

    # through the round's node; the phrase that opens the evidence ("put rev 7")
    write: Callable[[], Awaitable[str]]
    # on the given node; None when the item is absent
    read: Callable[[NodeConfig], Awaitable[V | None]]
    # through the round's node; how many items went
    delete: Callable[[], Awaitable[int]]
    # what a node that does not answer raises
    failure: type[E]
    # a failed write or delete, as the node's whole evidence
    describe: Callable[[E], str]
    # a failed read, as that node's entry in the evidence
    describe_read: Callable[[E], str]


async def _read_everywhere(t: ClusterTarget, ops: CrudOps[V, E]) -> dict[str, V | str | None]:
    # one node failing to read is part of the evidence, not the end of the round
    out: dict[str, V | str | None] = {}
    for other in t.configs:
        try:
            out[other.node_id] = await ops.read(other)
        except ops.failure as exc:
            out[other.node_id] = ops.describe_read(exc)
    return out


async def crud_round(t: ClusterTarget, cfg: NodeConfig, value: V, ops: CrudOps[V, E]) -> NodeResult:
    """Write ``value`` through ``cfg``'s node, read it on every node, delete it, read again.

    Passes when every node read ``value``, exactly one item was deleted and no node
    still has it; the evidence names the nodes that read something else or kept it.
    """
    try:
        wrote = await ops.write()
        seen = await _read_everywhere(t, ops)
        deleted = await ops.delete()
        after = await _read_everywhere(t, ops)
    except ops.failure as exc:
        return NodeResult(cfg.node_id, False, ops.describe(exc))
    stale = {n: v for n, v in seen.items() if v != value}
    left = {n: v for n, v in after.items() if v is not None}
    ok = not stale and not left and deleted == 1
    evidence = (
        f"{wrote}, linearizable read on {len(seen) - len(stale)}/{len(seen)} nodes"
        + (f" (wrong: {stale})" if stale else "")
        + f", deleted {deleted}, still there on {len(left)}"
        + (f" ({left})" if left else "")
    )
    return NodeResult(cfg.node_id, ok, evidence)
