"""What every driver of :class:`~plasmacloud.raft.core.RaftCore` does the same way: recover
the core (and the state machine) from its :class:`~plasmacloud.raft.storage.Storage`, take
the core's Ready outputs in order, and carry out their log writes. Shared by the asyncio
driver (:mod:`plasmacloud.raft.node`) and the simulation."""

from __future__ import annotations

import logging
from collections.abc import Callable

from plasmacloud.raft.api import StateMachine
from plasmacloud.raft.codec import HardState
from plasmacloud.raft.core import Append, Install, LogWrite, RaftCore, Ready, Truncate
from plasmacloud.raft.storage import Storage

log = logging.getLogger(__name__)

WRITE_NAMES = {Append: "log append", Truncate: "log truncation", Install: "installing a snapshot"}


def load(storage: Storage, core: RaftCore, members: dict[str, str]) -> None:
    """Open ``storage`` and load what it holds into ``core``; a new node starts with term 0
    and ``members`` (empty for a node that joins an existing cluster)."""
    rec = storage.open()
    hs = rec.hard_state
    if hs is None:
        hs = HardState(0, "", dict(members))
        storage.save_hard_state(hs)
    core.load(hs, rec.snapshot, rec.entries)


def recover_state_machine(storage: Storage, core: RaftCore, sm: StateMachine) -> int:
    """Bring the state machine to the snapshot if it is behind it; its applied index."""
    sm_applied = sm.applied_index()
    snap_index, last_index = core.snap_index, core.last_index
    if snap_index and sm_applied < snap_index:
        meta, data = storage.read_snapshot()
        assert meta is not None and meta.index == snap_index
        sm.restore(data, meta.index)
        return meta.index
    if sm_applied > last_index:
        log.error(
            "%s: state machine says it applied %d but the log ends at %d; replaying from the "
            "log end",
            core.id,
            sm_applied,
            last_index,
        )
        return last_index
    return max(sm_applied, snap_index)


def write_log(storage: Storage, w: LogWrite) -> None:
    """One log write of a Ready (the caller restores the state machine after an Install)."""
    if isinstance(w, Append):
        storage.append(w.entries)
    elif isinstance(w, Truncate):
        storage.truncate_suffix(w.index)
    else:
        storage.write_snapshot(w.meta, w.data)
        if w.keep_log:
            storage.compact(w.meta.index)
        else:
            storage.reset(w.meta.index + 1)


def drain(core: RaftCore, handle: Callable[[Ready], None], apply: Callable[[], None]) -> None:
    """Handle every Ready the core has, apply what is committed, then handle what applying
    asked for (a leader whose removal was applied steps down)."""
    while core.has_ready():
        handle(core.ready())
    apply()
    while core.has_ready():
        handle(core.ready())
