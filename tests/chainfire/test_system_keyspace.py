"""The system keyspace in the state machine: its own table and commands, invisible to
every etcd read, revision and watch; carried by snapshots; the one-time migration."""

from __future__ import annotations

from pathlib import Path

from plasmacloud.chainfire.mvcc import MvccStore, WatchEvent
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.proto import system_pb2 as sys_pb
from plasmacloud.chainfire.system import LEGACY_PREFIX

from .conftest import Applier

EVERYTHING = pb.RangeRequest(key=b"\0", range_end=b"\0")


def sys_keys(store: MvccStore, prefix: bytes = b"") -> list[tuple[bytes, bytes, int]]:
    resp = store.sys_range(sys_pb.RangeRequest(prefix=prefix))
    return [(kv.key, kv.value, kv.version) for kv in resp.kvs]


def test_put_get_delete_versions(apply: Applier, store: MvccStore) -> None:
    v1 = apply(sys_pb.PutRequest(key=b"/a", value=b"1")).version
    v2 = apply(sys_pb.PutRequest(key=b"/a", value=b"2")).version
    assert 0 < v1 < v2  # every write changes the version
    got = store.sys_get(sys_pb.GetRequest(key=b"/a"))
    assert got.HasField("kv") and (got.kv.value, got.kv.version) == (b"2", v2)
    assert apply(sys_pb.DeleteRequest(key=b"/a")).deleted is True
    assert apply(sys_pb.DeleteRequest(key=b"/a")).deleted is False
    assert not store.sys_get(sys_pb.GetRequest(key=b"/a")).HasField("kv")
    v3 = apply(sys_pb.PutRequest(key=b"/a", value=b"3")).version
    assert v3 > v2  # a re-created key never gets an old version back


def test_compare_and_swap(apply: Applier, store: MvccStore) -> None:
    cas = sys_pb.CompareAndSwapRequest
    created = apply(cas(key=b"/k", expected_version=0, value=b"x"))
    assert created.succeeded and created.version > 0
    assert not apply(cas(key=b"/k", expected_version=0, value=b"y")).succeeded
    stale = apply(cas(key=b"/k", expected_version=created.version + 7, value=b"y"))
    assert not stale.succeeded and stale.version == created.version
    swapped = apply(cas(key=b"/k", expected_version=created.version, value=b"y"))
    assert swapped.succeeded and swapped.version > created.version
    deleted = apply(cas(key=b"/k", expected_version=swapped.version))  # no value: delete
    assert deleted.succeeded and deleted.version == 0
    assert sys_keys(store) == []


def test_range_prefix_paging(apply: Applier, store: MvccStore) -> None:
    apply(*(sys_pb.PutRequest(key=k, value=b"v") for k in (b"/p/a", b"/p/b", b"/p/c", b"/q")))
    page = store.sys_range(sys_pb.RangeRequest(prefix=b"/p/", limit=2))
    assert [kv.key for kv in page.kvs] == [b"/p/a", b"/p/b"]
    rest = store.sys_range(sys_pb.RangeRequest(prefix=b"/p/", start_after=b"/p/b"))
    assert [kv.key for kv in rest.kvs] == [b"/p/c"]
    assert [k for k, _v, _n in sys_keys(store)] == [b"/p/a", b"/p/b", b"/p/c", b"/q"]


def test_invisible_to_etcd_reads_revisions_and_watches(apply: Applier, store: MvccStore) -> None:
    seen: list[WatchEvent] = []
    store.add_listener(seen.extend)
    apply(pb.PutRequest(key=b"user", value=b"u"))
    rev, hashed = store.revision, store.hash_kv()
    apply(
        sys_pb.PutRequest(key=b"/plasmacloud/iam/users/x", value=b"secret"),
        sys_pb.CompareAndSwapRequest(key=b"/s", expected_version=0, value=b"v"),
        sys_pb.DeleteRequest(key=b"/s"),
    )
    assert store.revision == rev and store.hash_kv() == hashed
    assert [kv.key for kv in store.range(EVERYTHING).kvs] == [b"user"]
    assert [e.key for e in seen] == [b"user"]  # the system writes raised no event
    # and the other way round: an admin's delete of everything leaves the system keys
    apply(pb.DeleteRangeRequest(key=b"\0", range_end=b"\0"))
    assert [k for k, _v, _n in sys_keys(store)] == [b"/plasmacloud/iam/users/x"]


def test_snapshot_carries_the_system_table(
    tmp_path: Path, apply: Applier, store: MvccStore
) -> None:
    apply(sys_pb.PutRequest(key=b"/a", value=b"1"), pb.PutRequest(key=b"k", value=b"v"))
    apply(sys_pb.MigrateRequest(prefix=LEGACY_PREFIX))
    other = MvccStore(tmp_path / "other.db")
    other.restore(store.snapshot(), store.applied_index())
    assert sys_keys(other) == sys_keys(store) and other.sys_migrated
    # the version counter travelled too: the next write continues, never repeats
    last = sys_keys(store)[0][2]
    assert Applier(other)(sys_pb.PutRequest(key=b"/b", value=b"2")).version > last
    other.close()


def test_replicas_applying_the_same_log_agree(tmp_path: Path) -> None:
    log = [
        pb.PutRequest(key=LEGACY_PREFIX + b"users/a", value=b"A"),
        sys_pb.PutRequest(key=b"/x", value=b"1"),
        sys_pb.CompareAndSwapRequest(key=b"/x", expected_version=2, value=b"2"),
        sys_pb.MigrateRequest(prefix=LEGACY_PREFIX),
        sys_pb.CompareAndSwapRequest(key=b"/y", expected_version=0, value=b"3"),
        sys_pb.DeleteRequest(key=b"/x"),
    ]
    states = []
    for name in ("r1", "r2"):
        replica = MvccStore(tmp_path / f"{name}.db")
        results = [Applier(replica)(req) for req in log]
        states.append((sys_keys(replica), replica.hash_kv(), [str(r) for r in results]))
        replica.close()
    assert states[0] == states[1]


def test_migration_moves_legacy_keys_once(apply: Applier, store: MvccStore) -> None:
    """A data dir of the old layout: IAM's keys were public keys under the legacy prefix."""
    seen: list[WatchEvent] = []
    store.add_listener(seen.extend)
    apply(
        pb.PutRequest(key=LEGACY_PREFIX + b"users/admin", value=b"{admin}"),
        pb.PutRequest(key=LEGACY_PREFIX + b"keys/k1", value=b"{key}"),
        pb.PutRequest(key=b"/plasmacloud/iamx", value=b"not under the prefix"),
        pb.PutRequest(key=b"app/1", value=b"user data"),
    )
    assert not store.sys_migrated
    moved = apply(sys_pb.MigrateRequest(prefix=LEGACY_PREFIX))
    assert moved.moved == 2 and store.sys_migrated
    assert [(k, v) for k, v, _n in sys_keys(store)] == [
        (LEGACY_PREFIX + b"keys/k1", b"{key}"),
        (LEGACY_PREFIX + b"users/admin", b"{admin}"),
    ]
    public = [kv.key for kv in store.range(EVERYTHING).kvs]
    assert public == [b"/plasmacloud/iamx", b"app/1"]
    # the public copies were deleted in one revision, like any DeleteRange
    assert sorted(e.key for e in seen[-2:]) == [
        LEGACY_PREFIX + b"keys/k1",
        LEGACY_PREFIX + b"users/admin",
    ]
    # after the marker, keys under the prefix are ordinary user keys
    apply(pb.PutRequest(key=LEGACY_PREFIX + b"mine", value=b"user's"))
    assert apply(sys_pb.MigrateRequest(prefix=LEGACY_PREFIX)).moved == 0
    assert store.range(pb.RangeRequest(key=LEGACY_PREFIX + b"mine")).count == 1
    assert len(sys_keys(store)) == 2


def test_marker_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    first = MvccStore(path)
    Applier(first)(sys_pb.MigrateRequest(prefix=LEGACY_PREFIX))
    first.close()
    again = MvccStore(path)
    assert again.sys_migrated
    again.close()


def test_client_snapshot_leaves_the_system_table_out(
    tmp_path: Path, apply: Applier, store: MvccStore
) -> None:
    """Maintenance.Snapshot (etcdctl snapshot save) streams this: user keys, no records."""
    secret = b"signing-key-" + bytes(range(32)).hex().encode()
    apply(
        sys_pb.MigrateRequest(prefix=LEGACY_PREFIX),
        sys_pb.PutRequest(key=b"/plasmacloud/iam/keys/k1", value=secret),
        pb.PutRequest(key=b"app/1", value=b"user data"),
    )
    image = store.client_backup_bytes()
    assert secret not in image and b"/plasmacloud/iam/keys" not in image
    restored = MvccStore(tmp_path / "restored.db")
    restored.restore(image, store.applied_index())
    assert [kv.key for kv in restored.range(EVERYTHING).kvs] == [b"app/1"]
    assert sys_keys(restored) == [] and restored.sys_migrated
    restored.close()
    assert len(sys_keys(store)) == 1  # the member's own copy is untouched
