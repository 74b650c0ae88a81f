"""SystemKV on one in-process member (plaintext port: no identity to check, like the rest
of that port): the KVStore operations IAM needs, none of it visible through etcd's API."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.node import ChainfireNode, NodeIdentity
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.proto import system_pb2 as sys_pb
from plasmacloud.chainfire.proto import system_pb2_grpc
from plasmacloud.chainfire.services.system import NOT_MIGRATED, SystemKVServicer
from plasmacloud.chainfire.system import LEGACY_PREFIX

from .conftest import Applier, LocalRaft, Served


async def test_operations_leave_the_etcd_view_untouched(served: Served) -> None:
    stub = system_pb2_grpc.SystemKVStub(served.channel)
    before = await served.maintenance.Status(pb.StatusRequest())
    put = await stub.Put(sys_pb.PutRequest(key=b"/iam/a", value=b"1"))
    cas = await stub.CompareAndSwap(
        sys_pb.CompareAndSwapRequest(key=b"/iam/b", expected_version=0, value=b"2")
    )
    assert cas.succeeded and cas.version > put.version > 0
    got = await stub.Get(sys_pb.GetRequest(key=b"/iam/a"))
    assert (got.kv.value, got.kv.version) == (b"1", put.version)
    listed = await stub.Range(sys_pb.RangeRequest(prefix=b"/iam/", start_after=b"/iam/a"))
    assert [kv.key for kv in listed.kvs] == [b"/iam/b"]
    assert (await stub.Delete(sys_pb.DeleteRequest(key=b"/iam/a"))).deleted
    assert not (await stub.Get(sys_pb.GetRequest(key=b"/iam/a"))).HasField("kv")
    after = await served.maintenance.Status(pb.StatusRequest())
    assert after.header.revision == before.header.revision
    everything = await served.kv.Range(pb.RangeRequest(key=b"\0", range_end=b"\0"))
    assert everything.count == 0


async def test_an_empty_key_is_refused(served: Served) -> None:
    stub = system_pb2_grpc.SystemKVStub(served.channel)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Put(sys_pb.PutRequest(key=b"", value=b"x"))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_calls_wait_for_the_migration_marker(tmp_path: Path) -> None:
    """No leader, so no migration: SystemKV answers UNAVAILABLE instead of an empty
    keyspace that might still be about to receive the legacy records."""
    store = MvccStore(tmp_path / "kv.db")
    raft = LocalRaft(store)
    raft.leader = None
    node = ChainfireNode(store, raft, NodeIdentity(node_id="node01"), request_timeout=0.3)
    servicer = SystemKVServicer(node, require_member_cert=False)
    with pytest.raises(errors.EtcdError) as exc:
        await servicer.ready()
    assert exc.value == NOT_MIGRATED
    Applier(store)(sys_pb.MigrateRequest(prefix=LEGACY_PREFIX))
    await servicer.ready()  # the marker applied (by any leader): no wait
    store.close()
