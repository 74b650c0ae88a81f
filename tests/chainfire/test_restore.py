"""A snapshot's revision is the one its database holds, and the one a restore starts at."""

from __future__ import annotations

from pathlib import Path

from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.restore import restore_member, snapshot_revision

from .conftest import Applier


def test_a_snapshot_names_the_revision_it_holds(
    tmp_path: Path, apply: Applier, store: MvccStore
) -> None:
    apply(*(pb.PutRequest(key=f"k{i}".encode(), value=b"v") for i in range(5)))
    taken = store.snapshot()
    apply(pb.PutRequest(key=b"later", value=b"v"))  # after the snapshot: not in it
    assert snapshot_revision(taken) == store.revision - 1 > 1
    assert restore_member(taken, tmp_path / "member") == snapshot_revision(taken)
