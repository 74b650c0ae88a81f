"""Rolling restart: every node once, one at a time, the cluster serving throughout.

Followers go first and the Chainfire leader last, so leadership moves once; a stopping
leader hands it to its most up-to-date follower itself (the Raft engine's transfer on a
graceful stop), which costs the cluster a round trip instead of an election timeout. The
next node is touched only when the whole cluster is ready again (every node healthy,
every member listed, one agreed leader); an unhealthy cluster is refused before anything
stops, since taking a node out of a degraded cluster can cost its quorum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from plasmacloud.cluster.control import ClusterError
from plasmacloud.cluster.probe import describe
from plasmacloud.cluster.target import ClusterTarget


@dataclass(frozen=True)
class NodeRestart:
    node_id: str
    was_leader: bool
    seconds: float  # from the stop until the cluster was ready again


def restart_order(nodes: list[str], leader: str | None) -> list[str]:
    """Followers in id order, then the leader."""
    return sorted(n for n in nodes if n != leader) + ([leader] if leader in nodes else [])


async def rolling_restart(
    target: ClusterTarget,
    ready_timeout: float,
    progress: Callable[[str], None],
) -> list[NodeRestart]:
    """Restart every node of ``target`` in turn with its node control."""
    control = target.control
    if control is None:
        raise ClusterError(f"the {target.name} target has no node control to restart nodes with")
    view = await target.probe()
    if not view.ready:
        raise ClusterError(
            f"the cluster is not healthy; fix it before a rolling restart ({describe(view)})"
        )
    leader = view.leader_node
    done = []
    for node in restart_order(target.node_ids, leader):
        progress(f"restarting {node}{' (leader)' if node == leader else ''}")
        started = time.monotonic()
        await asyncio.to_thread(control.stop_node, node)
        await asyncio.to_thread(control.start_node, node)
        await target.wait_ready(ready_timeout)
        done.append(NodeRestart(node, node == leader, time.monotonic() - started))
        progress(f"{node} back, cluster ready after {done[-1].seconds:.1f} s")
    return done
