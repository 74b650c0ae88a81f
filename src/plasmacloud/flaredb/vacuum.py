"""Scheduled VACUUM, rqlite's ``-auto-vacuum-int`` (``flaredb.auto_vacuum_interval``).

SQLite keeps the pages of deleted rows as free pages of the file: a table that was
large once keeps the database file large. VACUUM rewrites the file without them. The
leader proposes it through the log like a client's ``VACUUM`` request, so every replica
runs it at the same entry: VACUUM may renumber the rowids of tables without an INTEGER
PRIMARY KEY, and replicas that did so at different points would apply later statements
naming rowids differently.
"""

from __future__ import annotations

import asyncio
import logging

from plasmacloud.flaredb.command import Command
from plasmacloud.flaredb.models import ErrorResult, Statement
from plasmacloud.raft.api import RaftError
from plasmacloud.raft.node import RaftNode

log = logging.getLogger(__name__)

# a VACUUM rewrites the whole file: allow it far longer than a client's write
VACUUM_TIMEOUT_S = 300.0


async def vacuum_on_schedule(raft: RaftNode, interval_s: float) -> None:
    """Forever: every ``interval_s``, if this node leads, VACUUM every replica."""
    while True:
        await asyncio.sleep(interval_s)
        if not raft.is_leader:  # the leader of the moment does it; followers wait
            continue
        data = Command.new([Statement("VACUUM")]).encode()
        try:
            results = await raft.propose(data, timeout=VACUUM_TIMEOUT_S)
        except RaftError as exc:
            log.warning("scheduled VACUUM not done (tried again in %.0f s): %s", interval_s, exc)
            continue
        failed = [r.error for r in results if isinstance(r, ErrorResult)]
        if failed:
            log.warning("scheduled VACUUM failed: %s", "; ".join(failed))
        else:
            log.info("scheduled VACUUM done; the next in %.0f s", interval_s)
