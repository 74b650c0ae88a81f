"""A snapshot's revision is the one its database holds, and the one a restore starts at."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.restore import SnapshotError, restore_member, snapshot_revision
from plasmacloud.raft.codec import SnapshotMeta
from plasmacloud.raft.disk import OsDisk
from plasmacloud.raft.storage import Storage

from .conftest import Applier


def test_a_snapshot_names_the_revision_it_holds(
    tmp_path: Path, apply: Applier, store: MvccStore
) -> None:
    apply(*(pb.PutRequest(key=f"k{i}".encode(), value=b"v") for i in range(5)))
    taken = store.snapshot()
    apply(pb.PutRequest(key=b"later", value=b"v"))  # after the snapshot: not in it
    assert snapshot_revision(taken) == store.revision - 1 > 1
    members = {"node01": "node01:2380", "node02": "node02:2380"}
    member = tmp_path / "member"
    assert restore_member(taken, member, members) == snapshot_revision(taken)


def test_a_restored_member_starts_a_group_from_a_snapshot_of_the_restored_data(
    tmp_path: Path, apply: Applier, store: MvccStore
) -> None:
    """As etcd's restore writes a snap file: the Raft snapshot is what a member added to
    the restored group is sent (a state outside Raft would reach it never)."""
    apply(*(pb.PutRequest(key=f"k{i}".encode(), value=b"v") for i in range(5)))
    members = {"node01": "node01:2380", "node02": "node02:2380", "node03": "node03:2380"}
    member = tmp_path / "member"
    restore_member(store.snapshot(), member, members)
    storage = Storage(OsDisk(), str(member / "raft"))
    recovered = storage.open()
    meta, data = storage.read_snapshot()
    storage.close()
    assert meta == SnapshotMeta(1, 1, members) and recovered.entries == []
    assert recovered.hard_state is not None and recovered.hard_state.term == 1
    assert data == (member / "kv.db").read_bytes()
    restored = MvccStore(member / "kv.db")
    try:
        assert restored.applied_index() == 1  # the seed: the group's log continues at 2
        assert restored.range(pb.RangeRequest(key=b"k", range_end=b"l")).count == 5
    finally:
        restored.close()
    with pytest.raises(SnapshotError, match="already holds"):
        restore_member(store.snapshot(), member, members)
