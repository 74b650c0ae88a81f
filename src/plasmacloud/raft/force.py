"""Force a new one-member group from one member's data, as etcd's ``--force-new-cluster``
and rqlite's ``peers.json`` recovery do: the log and the applied state stay, only the
membership changes.

This is an explicit, unsafe operator override of Raft, for one situation: a majority of the
members is gone for good (disks lost, machines destroyed), so no configuration change can
ever commit again and the group is stuck read-only forever. Raft's guarantees rest on every
decision being made by a majority; this function instead lets one member declare itself
the whole group. What that costs:

* Writes the lost members acknowledged but this member never received are lost (they were
  committed on the majority that is gone). The member with the longest log is the best
  survivor to pick.
* Entries in this member's log that were never committed (not acknowledged to anyone) are
  committed by the new group: a client that timed out may see its write happen after all.
  Keeping them rather than dropping them loses nothing that was acknowledged.
* If any of the old members comes back with its old data it still believes in the old
  membership, and two of them form a majority of it: two groups that both accept writes.
  The old members must stay down, and rejoin only wiped, as new members.

Mechanics: a configuration entry naming only this member is appended after the last entry
(a configuration takes effect as soon as it is in the log, §6), at a term above every term
this member has seen, with the term saved first, so no member of the old group can hold a
different entry at that index and term. On restart the member is the only voter: it wins
its own election, its no-op commits the whole log, and the state machine applies what it
had not yet. Run it on a stopped member only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plasmacloud.raft.codec import CONFIG, HardState, LogEntry, decode_members, encode_members
from plasmacloud.raft.disk import Disk, OsDisk
from plasmacloud.raft.storage import Storage


class ForceNewClusterError(RuntimeError):
    """The directory cannot be made a one-member group; the message says why."""


@dataclass(frozen=True)
class ForcedMembership:
    """What :func:`force_new_cluster` changed."""

    previous: dict[str, str]  # node id -> address before
    members: dict[str, str]  # after: this member alone
    index: int  # of the configuration entry appended
    term: int  # of that entry (the member's new term)


def force_new_cluster(directory: Path, node_id: str, disk: Disk | None = None) -> ForcedMembership:
    """Make the stopped member ``node_id`` whose Raft state is in ``directory`` the only
    member of its group, keeping its log and snapshot; see the module docstring."""
    if not directory.is_dir() and disk is None:
        raise ForceNewClusterError(f"{directory}: no Raft data here (is this the data dir?)")
    storage = Storage(disk or OsDisk(), str(directory))
    rec = storage.open()
    try:
        if rec.hard_state is None:
            raise ForceNewClusterError(f"{directory}: no Raft state (a member never started)")
        hs, snap = rec.hard_state, rec.snapshot
        previous = snap.members if snap is not None else hs.members
        for e in rec.entries:
            if e.kind == CONFIG:
                previous = decode_members(e.data)[0]
        if node_id not in previous:
            raise ForceNewClusterError(
                f"{node_id} is not a member of the group in {directory} (members: "
                f"{', '.join(sorted(previous)) or 'none'})"
            )
        last_index = rec.entries[-1].index if rec.entries else (snap.index if snap else 0)
        last_term = rec.entries[-1].term if rec.entries else (snap.term if snap else 0)
        term = max(hs.term, last_term) + 1
        members = {node_id: previous[node_id]}
        # the term first: a crash before the entry leaves only a higher term, harmless
        storage.save_hard_state(HardState(term, "", hs.members))
        entry = LogEntry.make(last_index + 1, term, CONFIG, encode_members(members))
        storage.append([entry])
        files = storage.files_to_sync()
        for f in files:
            f.sync()
        storage.close_synced(files)
    finally:
        storage.close()
    return ForcedMembership(dict(previous), members, entry.index, term)
