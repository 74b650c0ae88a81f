"""Property test: the SQLite MVCC store against a tiny in-memory model of etcd's MVCC."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.chainfire.proto import rpc_pb2 as pb

from .conftest import Applier

KEYS = [b"a", b"ab", b"b", b"ba", b"c"]
State = dict[bytes, tuple[bytes, int, int, int]]  # key -> (value, create, mod, version)


class Model:
    """Every revision's full state, kept in memory."""

    def __init__(self) -> None:
        self.states: list[State] = [{}, {}]  # index = revision; revision 1 is empty
        self.compacted = -1  # etcd: nothing compacted yet, so compacting at 0 works once

    @property
    def rev(self) -> int:
        return len(self.states) - 1

    def put(self, key: bytes, value: bytes) -> None:
        s = dict(self.states[-1])
        rev = self.rev + 1
        old = s.get(key)
        s[key] = (value, old[1] if old else rev, rev, old[3] + 1 if old else 1)
        self.states.append(s)

    def delete(self, key: bytes, end: bytes) -> int:
        s = dict(self.states[-1])
        gone = [k for k in s if in_range(k, key, end)]
        for k in gone:
            del s[k]
        if gone:
            self.states.append(s)
        return len(gone)

    def txn(
        self, cmp_key: bytes, version: int, puts: list[tuple[bytes, bytes]], dele: bytes
    ) -> bool:
        """Compare a key's version; then put every pair (one revision) or delete a key."""
        s = self.states[-1]
        ok = (s[cmp_key][3] if cmp_key in s else 0) == version
        if ok:
            new = dict(s)
            rev = self.rev + 1
            for key, value in puts:
                old = new.get(key)
                new[key] = (value, old[1] if old else rev, rev, old[3] + 1 if old else 1)
            if puts:
                self.states.append(new)
        else:
            self.delete(dele, b"")
        return ok

    def range(self, key: bytes, end: bytes, rev: int) -> list[tuple[bytes, bytes, int, int, int]]:
        s = self.states[rev or self.rev]
        return sorted((k, *v) for k, v in s.items() if in_range(k, key, end))


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\0":
        return k >= key
    return key <= k < end


ends = st.sampled_from([b"", b"\0", b"b", b"c", b"d"])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=3)),
        st.tuples(st.just("del"), st.sampled_from(KEYS), ends),
        st.tuples(st.just("compact"), st.integers(0, 30)),
        st.tuples(
            st.just("get"), st.sampled_from(KEYS), ends, st.one_of(st.just(0), st.integers(0, 30))
        ),
        st.tuples(
            st.just("txn"),
            st.sampled_from(KEYS),
            st.integers(0, 3),
            st.dictionaries(st.sampled_from(KEYS), st.binary(max_size=2), max_size=3),
            st.sampled_from(KEYS),
        ),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_store_matches_model(program: list[tuple]) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as d:
        store = MvccStore(Path(d) / "kv.db")
        apply = Applier(store)
        model = Model()
        try:
            for op in program:
                if op[0] == "put":
                    apply(pb.PutRequest(key=op[1], value=op[2]))
                    model.put(op[1], op[2])
                elif op[0] == "del":
                    r = apply(pb.DeleteRangeRequest(key=op[1], range_end=op[2]))
                    assert r.deleted == model.delete(op[1], op[2])
                elif op[0] == "txn":
                    _, cmp_key, version, puts, dele = op
                    req = pb.TxnRequest(
                        compare=[
                            pb.Compare(
                                key=cmp_key,
                                target=pb.Compare.VERSION,
                                result=pb.Compare.EQUAL,
                                version=version,
                            )
                        ],
                        success=[
                            pb.RequestOp(request_put=pb.PutRequest(key=k, value=v))
                            for k, v in puts.items()
                        ],
                        failure=[
                            pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=dele))
                        ],
                    )
                    r = apply(req)
                    assert r.succeeded == model.txn(cmp_key, version, list(puts.items()), dele)
                    assert r.header.revision == model.rev
                elif op[0] == "compact":
                    r = apply(pb.CompactionRequest(revision=op[1]))
                    if op[1] <= model.compacted:
                        assert r == errors.COMPACTED
                    elif op[1] > model.rev:
                        assert r == errors.FUTURE_REV
                    else:
                        model.compacted = op[1]
                else:
                    _, key, end, rev = op
                    req = pb.RangeRequest(key=key, range_end=end, revision=rev)
                    if rev > model.rev:
                        expect_err: errors.EtcdError | None = errors.FUTURE_REV
                    elif 0 < rev < model.compacted or (rev == 0 and model.rev < model.compacted):
                        expect_err = errors.COMPACTED
                    else:
                        expect_err = None
                    try:
                        resp = store.range(req)
                    except errors.EtcdError as exc:
                        assert exc == expect_err
                        continue
                    assert expect_err is None
                    got = [
                        (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
                        for kv in resp.kvs
                    ]
                    assert got == model.range(key, end, rev)
                    assert resp.count == len(got) and resp.header.revision == model.rev
                assert store.revision == model.rev
            # finally every revision still readable must match the model exactly
            for rev in range(max(model.compacted, 1), model.rev + 1):
                resp = store.range(pb.RangeRequest(key=b"\0", range_end=b"\0", revision=rev))
                got = [
                    (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
                    for kv in resp.kvs
                ]
                assert got == model.range(b"\0", b"\0", rev), f"at revision {rev}"
        finally:
            store.close()
