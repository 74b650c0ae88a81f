"""Debian's etcdctl 3.4, unchanged, against one in-process member (plain TCP on loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from plasmacloud.chainfire.proto import rpc_pb2 as pb

from .conftest import Served

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


async def etcdctl(served: Served, *args: str, timeout: float = 20) -> str:
    """Run etcdctl against the member; return stdout (then stderr), fail on a non-zero exit."""
    env = {**os.environ, "ETCDCTL_API": "3"}
    proc = await asyncio.create_subprocess_exec(
        ETCDCTL,
        f"--endpoints=http://{served.address}",
        "--dial-timeout=5s",
        "--command-timeout=10s",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"etcdctl {' '.join(args)} failed: {err.decode()}"
    return out.decode() + err.decode()


async def test_put_get_del_prefix(served: Served) -> None:
    assert (await etcdctl(served, "put", "k", "v")).strip() == "OK"
    assert (await etcdctl(served, "get", "k")).split() == ["k", "v"]
    await etcdctl(served, "put", "dir/a", "1")
    await etcdctl(served, "put", "dir/b", "2")
    assert (await etcdctl(served, "get", "--prefix", "dir/")).split() == [
        "dir/a",
        "1",
        "dir/b",
        "2",
    ]
    assert (await etcdctl(served, "get", "--prefix", "--keys-only", "dir/")).split() == [
        "dir/a",
        "dir/b",
    ]
    out = json.loads(await etcdctl(served, "get", "k", "-w", "json"))
    assert out["count"] == 1 and out["header"]["revision"] == served.store.revision
    assert (await etcdctl(served, "del", "--prefix", "dir/")).strip() == "2"


async def test_txn_compaction_and_revisions(served: Served) -> None:
    await etcdctl(served, "put", "t", "1")
    await etcdctl(served, "put", "t", "2")
    proc_in = 'value("t") = "2"\n\nput t 3\n\nput t never\n\n'
    proc = await asyncio.create_subprocess_exec(
        ETCDCTL,
        f"--endpoints=http://{served.address}",
        "txn",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(proc_in.encode()), 20)
    assert out.decode().split() == ["SUCCESS", "OK"]
    assert (await etcdctl(served, "get", "t", "--rev=2")).split() == ["t", "1"]
    await etcdctl(served, "compaction", "3")
    assert served.store.compact_revision == 3


async def test_watch_from_revision(served: Served) -> None:
    await served.kv.Put(pb.PutRequest(key=b"w", value=b"1"))
    await served.kv.Put(pb.PutRequest(key=b"w", value=b"2"))
    env = {**os.environ, "ETCDCTL_API": "3"}
    proc = await asyncio.create_subprocess_exec(
        ETCDCTL,
        f"--endpoints=http://{served.address}",
        "watch",
        "w",
        "--rev=2",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [await asyncio.wait_for(proc.stdout.readline(), 10) for _ in range(6)]
    finally:
        proc.terminate()
        await proc.wait()
    assert [ln.decode().strip() for ln in lines] == ["PUT", "w", "1", "PUT", "w", "2"]


async def test_lease_commands(served: Served) -> None:
    out = await etcdctl(served, "lease", "grant", "60")
    lease_hex = out.split()[1]  # "lease 694d... granted with TTL(60s)"
    assert "granted with TTL(60s)" in out
    await etcdctl(served, "put", "--lease", lease_hex, "lk", "v")
    ttl = await etcdctl(served, "lease", "timetolive", "--keys", lease_hex)
    assert "granted with TTL(60s)" in ttl and "lk" in ttl
    assert "lease " + lease_hex + " keepalived with TTL(60)" in await etcdctl(
        served, "lease", "keep-alive", "--once", lease_hex
    )
    assert lease_hex in await etcdctl(served, "lease", "list")
    assert "revoked" in await etcdctl(served, "lease", "revoke", lease_hex)
    assert (await etcdctl(served, "get", "lk")).strip() == ""


async def test_member_endpoint_snapshot(served: Served, tmp_path: Path) -> None:
    members = await etcdctl(served, "member", "list", "-w", "json")
    parsed = json.loads(members)
    assert [m["name"] for m in parsed["members"]] == ["node01"]
    assert "is healthy" in await etcdctl(served, "endpoint", "health")
    status = json.loads(await etcdctl(served, "endpoint", "status", "-w", "json"))
    assert status[0]["Status"]["version"] == "3.4.23"
    assert status[0]["Status"]["leader"] == status[0]["Status"]["header"]["member_id"]
    await etcdctl(served, "put", "snap", "shot")
    target = tmp_path / "snap.db"
    await etcdctl(served, "snapshot", "save", str(target))
    assert target.stat().st_size > 0
    alarms = await etcdctl(served, "alarm", "list")
    assert alarms.strip() == ""


@pytest.mark.parametrize("mode", ["lock", "elect"])
async def test_lock_and_elect_use_kv_watch_lease(served: Served, mode: str) -> None:
    # etcdctl's lock/elect are clientv3 concurrency recipes on KV, Watch and Lease
    env = {**os.environ, "ETCDCTL_API": "3"}
    args = ["lock", "mylock"] if mode == "lock" else ["elect", "myelection", "me"]
    proc = await asyncio.create_subprocess_exec(
        ETCDCTL,
        f"--endpoints=http://{served.address}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
    finally:
        proc.terminate()
        await proc.wait()
    prefix = "mylock/" if mode == "lock" else "myelection/"
    assert first.startswith(prefix)
