"""Debian's etcdctl 3.4, unchanged, against the 3-node cluster over mutual TLS.

The single-member command coverage is in tests/chainfire/test_etcdctl.py; here every
check crosses nodes: written through one member, observed through another.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from plasmacloud.lab.control import Lab

from .conftest import etcdctl_env

pytestmark = pytest.mark.slow

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def etcdctl(lab: Lab, *args: str, node: int | None = None, stdin: str | None = None) -> str:
    """Run etcdctl with the lab's env (all endpoints, or only node ``node`` = 0, 1, 2)."""
    env = etcdctl_env(lab)
    if node is not None:
        env["ETCDCTL_ENDPOINTS"] = lab.spec.client_endpoints()[node]
    proc = subprocess.run(
        [ETCDCTL, "--dial-timeout=5s", "--command-timeout=10s", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, f"etcdctl {' '.join(args)}: {proc.stderr}"
    return proc.stdout + proc.stderr  # some commands (endpoint health) report on stderr


def etcdctl_fails(lab: Lab, *args: str, node: int) -> str:
    """Run etcdctl expecting a non-zero exit; return its stderr."""
    env = {**etcdctl_env(lab), "ETCDCTL_ENDPOINTS": lab.spec.client_endpoints()[node]}
    proc = subprocess.run(
        [ETCDCTL, "--dial-timeout=5s", *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0, f"etcdctl {' '.join(args)} unexpectedly succeeded"
    return proc.stderr


async def _spawn(lab: Lab, node: int, *args: str) -> asyncio.subprocess.Process:
    env = {**etcdctl_env(lab), "ETCDCTL_ENDPOINTS": lab.spec.client_endpoints()[node]}
    return await asyncio.create_subprocess_exec(
        ETCDCTL, *args, env=env, stdout=asyncio.subprocess.PIPE
    )


async def _line(proc: asyncio.subprocess.Process, timeout: float = 15) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().strip()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def test_members_endpoints_and_one_leader(shared_lab: Lab) -> None:
    members = json.loads(etcdctl(shared_lab, "member", "list", "-w", "json"))
    assert sorted(m["name"] for m in members["members"]) == ["node01", "node02", "node03"]
    health = etcdctl(shared_lab, "endpoint", "health")
    assert health.count("is healthy") == 3, health
    status = json.loads(etcdctl(shared_lab, "endpoint", "status", "-w", "json"))
    assert len(status) == 3
    leaders = {s["Status"]["leader"] for s in status}
    assert len(leaders) == 1
    ids = {s["Status"]["header"]["member_id"] for s in status}
    assert leaders <= ids


def test_put_on_one_node_get_prefix_and_delete_on_others(shared_lab: Lab) -> None:
    assert etcdctl(shared_lab, "put", "/x/a", "1", node=0).strip() == "OK"
    assert etcdctl(shared_lab, "put", "/x/b", "2", node=1).strip() == "OK"
    assert etcdctl(shared_lab, "get", "--prefix", "/x/", node=2).split() == [
        "/x/a",
        "1",
        "/x/b",
        "2",
    ]
    assert etcdctl(shared_lab, "del", "--prefix", "/x/", node=2).strip() == "2"
    assert etcdctl(shared_lab, "get", "--prefix", "/x/", node=0).strip() == ""


def test_txn_from_stdin_on_a_follower(shared_lab: Lab) -> None:
    etcdctl(shared_lab, "put", "/t", "old", node=0)
    out = etcdctl(
        shared_lab, "txn", node=1, stdin='value("/t") = "old"\n\nput /t new\n\nput /t never\n\n'
    )
    assert out.split() == ["SUCCESS", "OK"]
    assert etcdctl(shared_lab, "get", "/t", "--print-value-only", node=2).strip() == "new"


async def test_watch_on_one_node_sees_puts_through_another(shared_lab: Lab) -> None:
    rev = json.loads(etcdctl(shared_lab, "put", "/w/0", "zero", "-w", "json", node=0))
    start = rev["header"]["revision"] + 1  # watch from here: no race with the watch setup
    etcdctl(shared_lab, "put", "/w/1", "one", node=0)
    etcdctl(shared_lab, "put", "/w/2", "two", node=1)
    watcher = await _spawn(shared_lab, 2, "watch", "--prefix", "/w/", f"--rev={start}")
    try:
        lines = [await _line(watcher) for _ in range(6)]
        etcdctl(shared_lab, "put", "/w/3", "live", node=1)
        lines += [await _line(watcher) for _ in range(3)]
    finally:
        await _stop(watcher)
    assert lines == ["PUT", "/w/1", "one", "PUT", "/w/2", "two", "PUT", "/w/3", "live"]


def test_lease_granted_on_one_node_kept_alive_and_inspected_on_others(shared_lab: Lab) -> None:
    out = etcdctl(shared_lab, "lease", "grant", "60", node=0)
    assert "granted with TTL(60s)" in out
    lease = out.split()[1]
    etcdctl(shared_lab, "put", "--lease", lease, "/l/k", "v", node=1)
    kept = etcdctl(shared_lab, "lease", "keep-alive", "--once", lease, node=2)
    assert f"lease {lease} keepalived with TTL(60)" in kept
    ttl = etcdctl(shared_lab, "lease", "timetolive", "--keys", lease, node=1)
    assert "granted with TTL(60s)" in ttl and "/l/k" in ttl
    assert "revoked" in etcdctl(shared_lab, "lease", "revoke", lease, node=2)
    assert etcdctl(shared_lab, "get", "/l/k", node=0).strip() == ""


def test_compaction_applies_on_every_member(shared_lab: Lab) -> None:
    etcdctl(shared_lab, "put", "/c", "1", node=0)
    first = json.loads(etcdctl(shared_lab, "get", "/c", "-w", "json", node=0))
    old_rev = first["header"]["revision"]
    etcdctl(shared_lab, "put", "/c", "2", node=0)
    latest = json.loads(etcdctl(shared_lab, "get", "/c", "-w", "json", node=0))["header"]
    assert etcdctl(shared_lab, "get", "/c", f"--rev={old_rev}", node=2).split() == ["/c", "1"]
    etcdctl(shared_lab, "compaction", str(latest["revision"]), node=1)
    for node in (0, 1, 2):
        err = etcdctl_fails(shared_lab, "get", "/c", f"--rev={old_rev}", node=node)
        assert "required revision has been compacted" in err


def test_snapshot_save_from_the_cluster(shared_lab: Lab, tmp_path: Path) -> None:
    etcdctl(shared_lab, "put", "/snap", "shot", node=0)
    target = tmp_path / "snap.db"
    env_node = 2
    etcdctl(shared_lab, "snapshot", "save", str(target), node=env_node)
    assert target.stat().st_size > 0


async def test_lock_excludes_a_second_holder_on_another_node(shared_lab: Lab) -> None:
    first = await _spawn(shared_lab, 0, "lock", "/locks/m")
    second = None
    try:
        assert (await _line(first)).startswith("/locks/m/")
        second = await _spawn(shared_lab, 1, "lock", "/locks/m")
        with pytest.raises(TimeoutError):  # held by the first: the second must wait
            await _line(second, timeout=2)
        await _stop(first)  # etcdctl revokes its session lease on SIGTERM
        assert (await _line(second)).startswith("/locks/m/")
    finally:
        await _stop(first)
        if second is not None:
            await _stop(second)


async def test_elect_campaign_on_one_node_observed_from_another(shared_lab: Lab) -> None:
    candidate = await _spawn(shared_lab, 0, "elect", "/elections/e", "proposal-a")
    observer = None
    try:
        assert (await _line(candidate)).startswith("/elections/e/")
        assert await _line(candidate) == "proposal-a"
        observer = await _spawn(shared_lab, 2, "elect", "--listen", "/elections/e")
        assert (await _line(observer)).startswith("/elections/e/")
        assert await _line(observer) == "proposal-a"
    finally:
        await _stop(candidate)
        if observer is not None:
            await _stop(observer)
