"""Start a new group from a snapshot, as ``etcdctl snapshot restore`` does.

etcd's restore does not leave a member's state outside Raft: it writes the restored
database together with a Raft snapshot of it (and the new member list) into the data
directory. The snapshot is what makes a later member whole: the leader's log begins after
it, so a member added to the restored group is sent the snapshot, not only the entries
written since. A state machine seeded without one would be replicated to nobody.

Every member restored from the same file must be seeded with the same bytes and members,
so the seed is fixed: index 1, term 1 (an empty group's first entry would be index 1).
"""

from __future__ import annotations

from pathlib import Path

from plasmacloud.raft.codec import HardState, SnapshotMeta
from plasmacloud.raft.disk import Disk, OsDisk
from plasmacloud.raft.storage import Storage

SEED_INDEX = 1
SEED_TERM = 1


class SeedError(RuntimeError):
    """The directory already holds Raft state; the message says where."""


def seed_group(
    directory: Path, members: dict[str, str], data: bytes, disk: Disk | None = None
) -> SnapshotMeta:
    """Write Raft state for a member of a new group whose first state is ``data`` (the
    state machine's snapshot bytes, applied up to :data:`SEED_INDEX`) with ``members``:
    the hard state, the snapshot, and an empty log that continues it."""
    storage = Storage(disk or OsDisk(), str(directory))
    recovered = storage.open()
    try:
        if recovered.hard_state or recovered.snapshot or recovered.entries:
            raise SeedError(f"{directory} already holds Raft state; seed an empty directory")
        meta = SnapshotMeta(SEED_INDEX, SEED_TERM, dict(members))
        storage.save_hard_state(HardState(SEED_TERM, "", dict(members)))
        storage.write_snapshot(meta, data)
        storage.reset(SEED_INDEX + 1)
    finally:
        storage.close()
    return meta
