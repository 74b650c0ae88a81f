"""MVCC state machine: etcd 3.4 semantics for revisions, ranges, txns, compaction, leases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.leases import LeaseTimers
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.proto import kv_pb2
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.raft.api import Entry

from .conftest import Applier, FakeClock


def put(key: bytes, value: bytes = b"v", **kw: object) -> pb.PutRequest:
    return pb.PutRequest(key=key, value=value, **kw)


def keys(resp: pb.RangeResponse) -> list[bytes]:
    return [kv.key for kv in resp.kvs]


def test_revisions_versions_and_prev_kv(apply: Applier, store: MvccStore) -> None:
    assert store.revision == 1  # an empty etcd starts at revision 1
    r1 = apply(put(b"a", b"1"))
    assert r1.header.revision == 2
    r2 = apply(put(b"a", b"2", prev_kv=True))
    assert r2.header.revision == 3
    assert r2.prev_kv.value == b"1" and r2.prev_kv.version == 1
    kv = store.range(pb.RangeRequest(key=b"a")).kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (2, 3, 2, b"2")
    apply(pb.DeleteRangeRequest(key=b"a"))
    apply(put(b"a", b"3"))
    kv = store.range(pb.RangeRequest(key=b"a")).kvs[0]
    assert (kv.create_revision, kv.version) == (5, 1)  # deletion resets the version


def test_range_forms(apply: Applier, store: MvccStore) -> None:
    apply(*(put(k) for k in (b"a", b"ab", b"abc", b"b", b"c")))
    assert keys(store.range(pb.RangeRequest(key=b"ab"))) == [b"ab"]
    assert keys(store.range(pb.RangeRequest(key=b"a", range_end=b"b"))) == [b"a", b"ab", b"abc"]
    assert keys(store.range(pb.RangeRequest(key=b"ab", range_end=b"\0"))) == [
        b"ab",
        b"abc",
        b"b",
        b"c",
    ]
    assert len(store.range(pb.RangeRequest(key=b"\0", range_end=b"\0")).kvs) == 5
    # an empty interval (end <= key) is simply empty
    assert store.range(pb.RangeRequest(key=b"c", range_end=b"a")).count == 0


def test_range_limit_count_sort_keys_only(apply: Applier, store: MvccStore) -> None:
    apply(put(b"k1", b"z"), put(b"k2", b"y"), put(b"k3", b"x"))
    r = store.range(pb.RangeRequest(key=b"k", range_end=b"l", limit=2))
    assert keys(r) == [b"k1", b"k2"] and r.more and r.count == 3
    r = store.range(pb.RangeRequest(key=b"k", range_end=b"l", limit=3))
    assert not r.more and r.count == 3
    r = store.range(pb.RangeRequest(key=b"k", range_end=b"l", count_only=True))
    assert r.count == 3 and not r.kvs
    r = store.range(
        pb.RangeRequest(
            key=b"k",
            range_end=b"l",
            sort_target=pb.RangeRequest.VALUE,
            sort_order=pb.RangeRequest.ASCEND,
            limit=2,
        )
    )
    assert keys(r) == [b"k3", b"k2"] and r.more
    r = store.range(pb.RangeRequest(key=b"k", range_end=b"l", sort_order=pb.RangeRequest.DESCEND))
    assert keys(r) == [b"k3", b"k2", b"k1"]
    # a non-key target with no order sorts ascending, as etcd does
    r = store.range(pb.RangeRequest(key=b"k", range_end=b"l", sort_target=pb.RangeRequest.VALUE))
    assert keys(r) == [b"k3", b"k2", b"k1"]
    r = store.range(pb.RangeRequest(key=b"k", range_end=b"l", keys_only=True))
    assert all(kv.value == b"" for kv in r.kvs) and len(r.kvs) == 3


def test_range_revision_filters(apply: Applier, store: MvccStore) -> None:
    apply(put(b"a"))  # rev 2
    apply(put(b"b"))  # rev 3
    apply(put(b"a"))  # rev 4
    r = store.range(pb.RangeRequest(key=b"a", range_end=b"z", min_mod_revision=4))
    assert keys(r) == [b"a"] and r.count == 2  # count is before filtering, like etcd
    r = store.range(pb.RangeRequest(key=b"a", range_end=b"z", max_create_revision=2))
    assert keys(r) == [b"a"]
    r = store.range(pb.RangeRequest(key=b"a", range_end=b"z", min_create_revision=3))
    assert keys(r) == [b"b"]
    r = store.range(pb.RangeRequest(key=b"a", range_end=b"z", max_mod_revision=3))
    assert keys(r) == [b"b"]


def test_historic_reads_and_compaction(apply: Applier, store: MvccStore) -> None:
    apply(put(b"a", b"1"))  # 2
    apply(put(b"a", b"2"))  # 3
    apply(pb.DeleteRangeRequest(key=b"a"))  # 4
    apply(put(b"b", b"x"))  # 5
    at = {rev: store.range(pb.RangeRequest(key=b"a", revision=rev)) for rev in (2, 3, 4)}
    assert [r.kvs[0].value if r.kvs else None for r in at.values()] == [b"1", b"2", None]
    assert at[2].header.revision == 5  # header carries the current revision
    with pytest.raises(errors.EtcdError) as exc:
        store.range(pb.RangeRequest(key=b"a", revision=6))
    assert exc.value == errors.FUTURE_REV
    assert apply(pb.CompactionRequest(revision=3)).header.revision == 5
    assert store.compact_revision == 3
    with pytest.raises(errors.EtcdError) as exc:
        store.range(pb.RangeRequest(key=b"a", revision=2))
    assert exc.value == errors.COMPACTED
    assert store.range(pb.RangeRequest(key=b"a", revision=3)).kvs[0].value == b"2"
    assert apply(pb.CompactionRequest(revision=3)) == errors.COMPACTED
    assert apply(pb.CompactionRequest(revision=9)) == errors.FUTURE_REV
    apply(pb.CompactionRequest(revision=5))
    assert store.range(pb.RangeRequest(key=b"\0", range_end=b"\0", revision=5)).count == 1


def test_put_flags(apply: Applier, store: MvccStore) -> None:
    assert apply(put(b"a", b"", ignore_value=True)) == errors.KEY_NOT_FOUND
    lease = apply(pb.LeaseGrantRequest(TTL=60)).ID
    apply(put(b"a", b"1", lease=lease))
    apply(put(b"a", b"", ignore_value=True))
    kv = store.range(pb.RangeRequest(key=b"a")).kvs[0]
    assert (kv.value, kv.lease) == (b"1", 0)  # no lease given and not ignored: detached
    apply(put(b"a", b"2", lease=lease))
    apply(put(b"a", b"3", ignore_lease=True))
    kv = store.range(pb.RangeRequest(key=b"a")).kvs[0]
    assert (kv.value, kv.lease) == (b"3", lease)
    assert apply(put(b"b", lease=12345)) == errors.LEASE_NOT_FOUND
    assert store.range(pb.RangeRequest(key=b"b")).count == 0


def test_delete_range_prev_kv_and_revision(apply: Applier, store: MvccStore) -> None:
    apply(put(b"a"), put(b"b"), put(b"c"))
    rev = store.revision
    r = apply(pb.DeleteRangeRequest(key=b"x"))
    assert r.deleted == 0 and r.header.revision == rev  # nothing deleted: no new revision
    r = apply(pb.DeleteRangeRequest(key=b"a", range_end=b"c", prev_kv=True))
    assert r.deleted == 2 and [kv.key for kv in r.prev_kvs] == [b"a", b"b"]
    assert r.header.revision == rev + 1 == store.revision


def cmp(key: bytes, target: str, result: str, **val: object) -> pb.Compare:
    return pb.Compare(
        key=key,
        target=getattr(pb.Compare, target),
        result=getattr(pb.Compare, result),
        **val,
    )


def test_txn_compares_and_nesting(apply: Applier, store: MvccStore) -> None:
    apply(put(b"a", b"1"))
    lease = apply(pb.LeaseGrantRequest(TTL=60)).ID
    apply(put(b"l", lease=lease))
    assert apply(pb.TxnRequest(compare=[cmp(b"a", "VALUE", "EQUAL", value=b"1")])).succeeded
    assert not apply(pb.TxnRequest(compare=[cmp(b"zz", "VALUE", "EQUAL", value=b"")])).succeeded
    assert apply(pb.TxnRequest(compare=[cmp(b"zz", "VERSION", "EQUAL", version=0)])).succeeded
    assert apply(pb.TxnRequest(compare=[cmp(b"a", "CREATE", "LESS", create_revision=3)])).succeeded
    assert apply(pb.TxnRequest(compare=[cmp(b"a", "MOD", "GREATER", mod_revision=1)])).succeeded
    assert apply(pb.TxnRequest(compare=[cmp(b"l", "LEASE", "EQUAL", lease=lease)])).succeeded
    assert apply(
        pb.TxnRequest(compare=[cmp(b"a", "VERSION", "NOT_EQUAL", version=0, range_end=b"m")])
    ).succeeded
    rev = store.revision
    nested = pb.TxnRequest(
        compare=[cmp(b"a", "VALUE", "EQUAL", value=b"nope")],
        failure=[
            pb.RequestOp(request_put=put(b"x", b"1")),
            pb.RequestOp(
                request_txn=pb.TxnRequest(
                    # evaluated before the outer put, like etcd: x does not exist yet
                    compare=[cmp(b"x", "VERSION", "EQUAL", version=0)],
                    success=[
                        pb.RequestOp(request_put=put(b"y", b"2")),
                        pb.RequestOp(request_range=pb.RangeRequest(key=b"x")),
                    ],
                )
            ),
        ],
    )
    r = apply(nested)
    assert not r.succeeded and r.header.revision == rev + 1
    inner = r.responses[1].response_txn
    assert inner.succeeded and inner.responses[1].response_range.kvs[0].value == b"1"
    assert inner.HasField("header") and inner.header.revision == 0  # etcd leaves it empty
    # both puts share one revision
    revs = {kv.mod_revision for kv in store.range(pb.RangeRequest(key=b"x", range_end=b"z")).kvs}
    assert revs == {rev + 1}


def test_txn_failing_check_changes_nothing(apply: Applier, store: MvccStore) -> None:
    rev = store.revision
    bad = pb.TxnRequest(
        success=[
            pb.RequestOp(request_put=put(b"a")),
            pb.RequestOp(request_put=put(b"b", lease=777)),
        ]
    )
    assert apply(bad) == errors.LEASE_NOT_FOUND
    assert store.revision == rev and store.range(pb.RangeRequest(key=b"a")).count == 0
    future = pb.TxnRequest(
        success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"a", revision=99))]
    )
    assert apply(future) == errors.FUTURE_REV


def test_leases_grant_revoke_keepalive(tmp_path: Path) -> None:
    store = MvccStore(tmp_path / "leases.db", LeaseTimers(FakeClock()))  # time stands still
    apply = Applier(store)
    g = apply(pb.LeaseGrantRequest(TTL=1))
    assert g.TTL == 2  # etcd's minimum TTL
    assert apply(pb.LeaseGrantRequest(ID=g.ID, TTL=5)) == errors.LEASE_EXISTS
    assert apply(pb.LeaseGrantRequest(TTL=10**10)) == errors.LEASE_TTL_TOO_LARGE
    explicit = apply(pb.LeaseGrantRequest(ID=42, TTL=30))
    assert explicit.ID == 42 and store.leases()[42] == 30
    apply(put(b"k1", lease=42), put(b"k2", lease=42), put(b"k3"))
    assert store.lease_keys(42) == [b"k1", b"k2"]
    assert store.timers.remaining(42) == 30
    ka = apply(pb.LeaseKeepAliveRequest(ID=42))
    assert ka.TTL == 30
    rev = store.revision
    apply(pb.LeaseRevokeRequest(ID=42))
    assert store.revision == rev + 1  # both deletions at one revision
    assert keys(store.range(pb.RangeRequest(key=b"k", range_end=b"l"))) == [b"k3"]
    assert 42 not in store.leases() and store.timers.remaining(42) == -1
    assert apply(pb.LeaseRevokeRequest(ID=42)) == errors.LEASE_NOT_FOUND
    assert apply(pb.LeaseKeepAliveRequest(ID=42)) == errors.LEASE_NOT_FOUND
    store.close()


def test_nospace_alarm_blocks_growth(apply: Applier, store: MvccStore) -> None:
    apply(put(b"a"))
    on = pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=7, alarm=pb.NOSPACE)
    assert apply(on).alarms[0].memberID == 7
    assert store.nospace and [a.alarm for a in store.alarms()] == [pb.NOSPACE]
    assert apply(put(b"b")) == errors.NO_SPACE
    assert apply(pb.LeaseGrantRequest(TTL=5)) == errors.NO_SPACE
    assert apply(pb.TxnRequest(success=[pb.RequestOp(request_put=put(b"b"))])) == errors.NO_SPACE
    assert apply(pb.DeleteRangeRequest(key=b"a")).deleted == 1  # deletes still allowed
    off = pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=7, alarm=pb.NOSPACE)
    apply(off)
    assert not store.nospace and apply(put(b"b")).header.revision > 0


def test_garbage_command_is_an_error_not_a_crash(store: MvccStore) -> None:
    out = store.apply([Entry(1, 1, b"\xff\x00garbage"), Entry(2, 1, b"\x01\xff\xff\xff")])
    assert all(isinstance(r, errors.EtcdError) for r in out)
    assert store.applied_index() == 2 and store.revision == 1


def test_durable_state_and_replay_skip(tmp_path: Path) -> None:
    s = MvccStore(tmp_path / "kv.db")
    a = Applier(s)
    a(put(b"a", b"1"), put(b"b", b"2"))
    a(pb.LeaseGrantRequest(ID=5, TTL=10))
    s.close()
    s2 = MvccStore(tmp_path / "kv.db")
    assert s2.applied_index() == 3 and s2.revision == 3 and s2.leases() == {5: 10}
    # entries at or below the applied index are not applied twice
    from plasmacloud.chainfire.commands import encode

    assert s2.apply([Entry(2, 1, encode(put(b"b", b"again")))]) == [None]
    assert s2.range(pb.RangeRequest(key=b"b")).kvs[0].value == b"2"
    s2.close()


def test_snapshot_restore(tmp_path: Path, apply: Applier, store: MvccStore) -> None:
    apply(put(b"a", b"1"), put(b"b", b"2"), pb.LeaseGrantRequest(ID=9, TTL=20))
    data = store.snapshot()
    image = sqlite3.connect(":memory:")  # a standalone database, not tied to a WAL file
    image.deserialize(data)
    assert image.execute("PRAGMA quick_check").fetchone() == ("ok",)
    assert image.execute("SELECT count(*) FROM cur").fetchone() == (2,)
    image.close()
    other = MvccStore(tmp_path / "other.db", LeaseTimers(FakeClock()))
    Applier(other)(put(b"junk"))
    other.restore(data, 3)
    assert other.applied_index() == 3 and other.revision == store.revision
    assert keys(other.range(pb.RangeRequest(key=b"\0", range_end=b"\0"))) == [b"a", b"b"]
    assert other.leases() == {9: 20} and other.timers.remaining(9) == 20
    assert other.hash_kv() == store.hash_kv()
    with pytest.raises(ValueError):
        other.restore(b"not a database" * 100, 4)
    assert other.revision == store.revision  # a bad snapshot leaves the store as it was
    other.close()


def test_a_pinned_snapshot_is_the_state_when_pinned(
    tmp_path: Path, apply: Applier, store: MvccStore
) -> None:
    apply(put(b"a", b"1"), put(b"b", b"2"))
    read = store.snapshot_reader()
    index, revision, digest = store.applied_index(), store.revision, store.hash_kv()
    apply(put(b"a", b"changed"), put(b"c", b"3"))  # writes go on while it is read
    data = read()
    other = MvccStore(tmp_path / "other.db", LeaseTimers(FakeClock()))
    other.restore(data, index)
    assert other.revision == revision and other.hash_kv() == digest
    assert keys(other.range(pb.RangeRequest(key=b"\0", range_end=b"\0"))) == [b"a", b"b"]
    other.close()


def test_watch_history_and_listener(apply: Applier, store: MvccStore) -> None:
    seen: list[int] = []
    store.add_listener(lambda evs: seen.extend(e.revision for e in evs))
    apply(put(b"a", b"1"), put(b"b", b"1"))
    apply(pb.DeleteRangeRequest(key=b"a", range_end=b"c"))
    assert seen == [2, 3, 4, 4]
    evs = store.events_since(2, b"a", b"", store.revision)
    assert [e.event.type for e in evs] == [kv_pb2.Event.PUT, kv_pb2.Event.DELETE]
    assert evs[1].event.prev_kv.value == b"1" and evs[1].event.kv.mod_revision == 4


def test_odd_enum_values_do_not_break_apply(apply: Applier, store: MvccStore) -> None:
    apply(put(b"b", b"1"), put(b"a", b"2"))
    odd = pb.RangeRequest(key=b"a", range_end=b"z", sort_target=99, sort_order=7)  # type: ignore[arg-type]
    r = apply(pb.TxnRequest(success=[pb.RequestOp(request_range=odd)]))
    assert [kv.key for kv in r.responses[0].response_range.kvs] == [b"a", b"b"]
    unknown = pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=1, alarm=42)  # type: ignore[arg-type]
    apply(unknown)
    assert store.alarms() == []


def test_a_failing_entry_is_rolled_back_alone(
    apply: Applier, store: MvccStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(put(b"a", b"1"))
    real_put = MvccStore._put
    seen: list[list[bytes]] = []
    store.add_listener(lambda events: seen.append([e.key for e in events]))

    def buggy_put(self: MvccStore, w: object, req: pb.PutRequest) -> pb.PutResponse:
        resp = real_put(self, w, req)  # type: ignore[arg-type]
        if req.key == b"y":
            raise RuntimeError("simulated bug after a partial write")
        return resp

    monkeypatch.setattr(MvccStore, "_put", buggy_put)
    txn = pb.TxnRequest(
        success=[pb.RequestOp(request_put=put(b"x")), pb.RequestOp(request_put=put(b"y"))]
    )
    results = apply(txn, put(b"z", b"after"))
    assert isinstance(results[0], errors.EtcdError) and results[0].code.name == "INTERNAL"
    assert results[1].header.revision == 3  # the failed txn took no revision
    keys = [kv.key for kv in store.range(pb.RangeRequest(key=b"\0", range_end=b"\0")).kvs]
    assert keys == [b"a", b"z"]  # x (written before the failure) was rolled back
    # the batch was redone entry by entry: watchers saw z once, and never x
    assert seen == [[b"z"]]
    assert store.applied_index() == apply.index


def test_a_batch_without_failures_takes_no_savepoints(apply: Applier, store: MvccStore) -> None:
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    apply(put(b"a"), put(b"b"), pb.DeleteRangeRequest(key=b"a"))
    store._db.set_trace_callback(None)
    assert sum("INSERT OR REPLACE INTO cur" in s for s in statements) == 2
    assert not [s for s in statements if "SAVEPOINT" in s or "RELEASE" in s]
