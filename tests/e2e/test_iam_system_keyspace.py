"""Issue 18's check on a fresh 3-node lab with IAM (as `plasma lab up`): IAM's state is in
Chainfire's system keyspace, so real etcdctl as the admin can neither see nor delete it,
and a watch on every key sees none of IAM's writes; no certificate but a member's reaches
the SystemKV service. A lab whose data dirs have the old layout (IAM's keys public under
``/plasmacloud/iam/``) is migrated on start."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from plasmacloud.chainfire.proto import system_pb2, system_pb2_grpc
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.iam.client import IamClient
from plasmacloud.iam.credentials import AdminCredentials

from .conftest import READY_TIMEOUT_S, etcdctl_env
from .test_iam_lab import IamLab, etcdctl, started_iam_lab

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def iam_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamLab]:
    with started_iam_lab(tmp_path_factory.mktemp("syslab")) as lab:
        yield lab


def admin_user(lab: IamLab) -> str:
    admin = AdminCredentials.read(lab.lab.layout.admin_credentials)
    return f"{admin.username}:{admin.password}"


async def logins_work(lab: IamLab) -> None:
    """The admin's login and a service account's token login, after the wipe."""
    admin = AdminCredentials.read(lab.lab.layout.admin_credentials)
    async with IamClient(lab.iam_urls(), lab.lab.layout.ca_file) as c:
        await c.login_admin(admin)
        users = await c.call("GET", "/v1/users")
        assert "alice" in str(users)
        await c.login(
            {
                "grant_type": "client_credentials",
                "client_id": lab.sa_id,
                "client_secret": lab.sa_secret,
            }
        )
        assert c.token


def test_admin_wipe_leaves_iam_working(iam_lab: IamLab) -> None:
    admin = admin_user(iam_lab)
    wiped = etcdctl(iam_lab, "del", "", "--prefix", user=admin)
    assert wiped.returncode == 0, wiped.stderr
    asyncio.run(logins_work(iam_lab))
    listed = etcdctl(iam_lab, "get", "", "--prefix", "--keys-only", user=admin)
    assert listed.returncode == 0 and listed.stdout.strip() == "", listed.stdout
    # the admin's own etcdctl login (a password login at IAM) still works too
    put = etcdctl(iam_lab, "put", "app/after-wipe", "ok", user=admin)
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr


def test_a_watch_on_everything_sees_no_iam_traffic(iam_lab: IamLab) -> None:
    env = etcdctl_env(iam_lab.lab)
    env["ETCDCTL_USER"] = admin_user(iam_lab)
    watch = subprocess.Popen(
        ["etcdctl", "watch", "", "--prefix"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    marker_seen = threading.Event()

    def read() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            lines.append(line.strip())
            if line.strip() == "app/marker":
                marker_seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    user = env["ETCDCTL_USER"]
    try:
        # a user key seen proves the watch is registered before IAM writes anything
        deadline = time.monotonic() + 20
        while "app/before" not in lines and time.monotonic() < deadline:
            assert etcdctl(iam_lab, "put", "app/before", "b", user=user).returncode == 0
            time.sleep(0.5)
        registered = "app/before" in lines
        if registered:
            asyncio.run(create_user(iam_lab, "carol"))
            # a user key after IAM's writes: seen, so the watch was live all along
            assert etcdctl(iam_lab, "put", "app/marker", "m", user=user).returncode == 0
            marker_seen.wait(20)
    finally:
        os.killpg(watch.pid, signal.SIGTERM)
        _out, err = watch.communicate(timeout=20)
        reader.join(timeout=20)
    assert registered and marker_seen.is_set(), (lines, err)
    keys = [line for line in lines if line.startswith(("app/", "/"))]
    assert set(keys) == {"app/before", "app/marker"}, lines
    assert not any("carol" in line or "plasmacloud" in line for line in lines), lines


async def create_user(lab: IamLab, name: str) -> None:
    admin = AdminCredentials.read(lab.lab.layout.admin_credentials)
    async with IamClient(lab.iam_urls(), lab.lab.layout.ca_file) as c:
        await c.login_admin(admin)
        await c.call("POST", "/v1/users", json={"name": name, "password": f"{name}-password-1"})


async def test_operator_and_admin_get_permission_denied_from_systemkv(iam_lab: IamLab) -> None:
    admin = AdminCredentials.read(iam_lab.lab.layout.admin_credentials)
    async with IamClient(iam_lab.iam_urls(), iam_lab.lab.layout.ca_file) as c:
        token = str((await c.login_admin(admin))["access_token"])
    for cfg in iam_lab.lab.configs():
        async with dial(client_target(cfg), iam_lab.tls) as ch:
            stub = system_pb2_grpc.SystemKVStub(ch)
            for metadata in ((), (("token", token),)):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Range(
                        system_pb2.RangeRequest(prefix=b"/"), metadata=metadata, timeout=5
                    )
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Put(
                        system_pb2.PutRequest(key=b"/plasmacloud/iam/x", value=b"v"),
                        metadata=metadata,
                        timeout=5,
                    )
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_signing_keys_are_sealed_in_every_members_database(iam_lab: IamLab) -> None:
    """What a copied data dir, a Raft snapshot or a backup carries of IAM's signing keys
    opens only with the cluster's sealing key (the lab's pki/sealing.key, 0400)."""
    for cfg in iam_lab.lab.configs():
        assert cfg.sealing_key_file is not None
        assert cfg.sealing_key_file.stat().st_mode & 0o777 == 0o400
        db = sqlite3.connect(f"file:{cfg.data_path('chainfire') / 'kv.db'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT key, value FROM sys").fetchall()
        finally:
            db.close()
        keys = [bytes(v) for k, v in rows if bytes(k).startswith(b"/plasmacloud/iam/keys/")]
        assert keys, cfg.node_id  # tokens were issued: there is a signing key
        for value in keys:
            assert b"PRIVATE KEY" not in value and b'"sealed"' in value


def to_old_layout(db_path: Path) -> int:
    """Rewrite a stopped member's store as the previous release left it: IAM's records as
    public keys under /plasmacloud/iam/ (one revision each), no system table rows and no
    migration marker. Returns how many records moved."""
    db = sqlite3.connect(db_path)
    try:
        with db:
            rev = db.execute("SELECT v FROM meta WHERE k = 'revision'").fetchone()[0]
            rows = db.execute("SELECT key, value FROM sys ORDER BY key").fetchall()
            for key, value in rows:
                rev += 1
                db.execute(
                    "INSERT INTO cur(key, create_rev, mod_rev, version, value, lease) "
                    "VALUES(?,?,?,1,?,0)",
                    (key, rev, rev, value),
                )
                db.execute(
                    "INSERT INTO hist(rev, sub, key, create_rev, version, value, lease) "
                    "VALUES(?,0,?,?,1,?,0)",
                    (rev, key, rev, value),
                )
            db.execute("UPDATE meta SET v = ? WHERE k = 'revision'", (rev,))
            db.execute("DELETE FROM sys")
            db.execute("DELETE FROM meta WHERE k IN ('sys_migrated', 'sys_version')")
    finally:
        db.close()
    return len(rows)


def test_old_layout_data_dirs_are_migrated_on_start(tmp_path: Path) -> None:
    with started_iam_lab(tmp_path / "lab") as old:
        lab = old.lab
        lab.down()
        moved = {to_old_layout(c.data_path("chainfire") / "kv.db") for c in lab.configs()}
        assert len(moved) == 1  # the same records on every member
        moved_count = moved.pop()
        assert moved_count > 5
        lab.up()
        asyncio.run(lab.wait_ready(timeout=READY_TIMEOUT_S))
        asyncio.run(logins_work(old))  # the admin, alice and the bot came through
        logs = "".join(lab.layout.log_path(n, "chainfire").read_text() for n in lab.spec.node_ids)
        assert f"moved {moved_count} legacy IAM keys into the system keyspace" in logs
        admin = admin_user(old)
        listed = etcdctl(old, "get", "", "--prefix", "--keys-only", user=admin)
        assert listed.returncode == 0 and listed.stdout.strip() == "", listed.stdout
        # after the move, that prefix is an ordinary user's: written, read, and kept
        assert etcdctl(old, "put", "/plasmacloud/iam/mine", "v", user=admin).returncode == 0
        got = etcdctl(old, "get", "/plasmacloud/iam/mine", "--print-value-only", user=admin)
        assert got.stdout.strip() == "v"
        asyncio.run(logins_work(old))
