"""Knowing that this node was removed from its group, as etcd's members know.

A member learns its removal when it applies the configuration without itself (a leader
does, having committed it). A follower usually never sees that entry: once the change is
committed the leader stops replicating to it, and it sits campaigning (Pre-Vote keeps it
from disturbing anyone). etcd's peers answer such a member "removed" on its next message;
here the service asks: when this node has had no leader for a while, it asks the other
members (through the service's own API) who the members are, and a peer that knows a
leader and does not list this node settles it. The caller then stops serving.

A node started to join a cluster (``bootstrap: false``) is no member until it is added,
and no peer lists it: nothing is concluded before it has been a member.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from plasmacloud.raft.api import Consensus

# seconds between checks; and how long without a leader before the peers are asked
CHECK_INTERVAL_S = 1.0
LEADERLESS_S = 3.0

# asks one peer: its member node ids if it knows a leader, else None (unreachable, or no
# better informed than this node)
AskPeer = Callable[[str], Awaitable[Sequence[str] | None]]


async def wait_until_removed(
    raft: Consensus, node_id: str, peers: Sequence[str], ask: AskPeer
) -> str:
    """Return (with the reason) once this node is known to be out of its group; runs until
    cancelled otherwise."""
    leaderless_since: float | None = None
    # a member from the start (a removal may come before the first check); a node started
    # to join an existing cluster only once it is seen added
    joined = node_id in {m.node_id for m in raft.status().members}
    while True:
        await asyncio.sleep(CHECK_INTERVAL_S)
        members = {m.node_id for m in raft.status().members}
        joined = joined or node_id in members
        if not joined:
            continue
        if node_id not in members:
            return f"{node_id} applied a configuration without itself ({sorted(members)})"
        if raft.leader_id is not None:
            leaderless_since = None
            continue
        now = time.monotonic()
        leaderless_since = leaderless_since or now
        if now - leaderless_since < LEADERLESS_S:
            continue
        for peer in peers:
            theirs = await ask(peer)
            if theirs is not None and node_id not in theirs:
                return f"{peer} lists the members {sorted(theirs)}, without {node_id}"


async def until_stopped_or_removed(stop: asyncio.Event, removed: Awaitable[str]) -> str | None:
    """Wait for ``stop`` or the removal (then its reason, as etcd's removed members stop);
    whichever comes first cancels the other."""
    stopping = asyncio.create_task(stop.wait())
    removal = asyncio.ensure_future(removed)
    done, pending = await asyncio.wait({stopping, removal}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return removal.result() if removal in done else None
