"""Backup and disaster recovery on a lab (process and netns) with IAM and auth on, as an
operator runs them: `plasma cluster backup` while the chaos run's clients write, `plasma
cluster backup verify`, changes made after the backup, then `plasma lab restore`: every
key, row, user and policy of the backup is back, every write acknowledged before the
backup began is too, what came later is gone, and a token issued before the backup still
verifies (the signing keys came back, sealed)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from plasmacloud.common.tls import client_context
from plasmacloud.iam.client import IamClient
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.lab.services import plasma_executable

from .chaos_clients import ChaosClients
from .conftest import etcdctl_env
from .test_iam_lab import IamLab, etcdctl, etcdctl_as, started_iam_lab

pytestmark = pytest.mark.slow

CHAOS_LIMIT_S = 300.0  # the chaos clients stop by themselves after this, whatever happens
CHAOS_TABLE = "chaos_backup"


def plasma(lab: IamLab, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**etcdctl_env(lab.lab), "PLASMA_LAB_DIR": str(lab.lab.layout.root)}
    return subprocess.run(
        [plasma_executable(), *args], env=env, capture_output=True, text=True, timeout=180
    )


async def sql(lab: IamLab, path: str, body: object) -> dict[str, object]:
    ctx = client_context(lab.tls)
    async with (
        aiohttp.ClientSession() as session,
        session.post(lab.flaredb_urls()[0] + path, json=body, ssl=ctx) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def iam(lab: IamLab, method: str, path: str, token: str | None = None) -> object:
    async with IamClient(lab.iam_urls(), lab.lab.layout.ca_file) as c:
        if token is None:
            await c.login_admin(AdminCredentials.read(lab.lab.layout.admin_credentials))
        else:
            c.token = token
        return await c.call(method, path)


async def bot_token(lab: IamLab) -> str:
    async with IamClient(lab.iam_urls(), lab.lab.layout.ca_file) as c:
        form = {"grant_type": "client_credentials", "client_id": lab.sa_id}
        body = await c.login({**form, "client_secret": lab.sa_secret})
        return str(body["access_token"])


def keys(lab: IamLab) -> list[str]:
    done = etcdctl(lab, "get", "", "--prefix", "--keys-only")
    assert done.returncode == 0, done.stderr
    return [k for k in done.stdout.split() if k]


async def backup_under_chaos(
    lab: IamLab, backup: Path
) -> tuple[subprocess.CompletedProcess[str], ChaosClients, float, float]:
    """`plasma cluster backup` while the chaos run's clients write to every node: its
    result, the clients' history (checked), and when (recorder time) it began and ended."""
    chaos = await ChaosClients.open(lab.lab, CHAOS_TABLE)
    writing = asyncio.gather(*chaos.workers(CHAOS_LIMIT_S))
    try:
        await asyncio.sleep(1.0)
        began = chaos.rec.now()
        taken = await asyncio.to_thread(
            plasma, lab, "cluster", "backup", "--out", str(backup), "--json"
        )
        ended = chaos.rec.now()
        await asyncio.sleep(0.5)
        chaos.stop()
        await writing
        await chaos.final_reads(lab.lab.spec.node_ids[0])
    finally:
        await chaos.close()
    chaos.check("backup")
    print(
        f"backup ({ended - began:.1f} s) under {len(chaos.acknowledged())} acknowledged writes; "
        f"longest gap without a completed operation: Chainfire "
        f"{chaos.longest_gap(began, ended, False):.2f} s, FlareDB "
        f"{chaos.longest_gap(began, ended, True):.2f} s"
    )
    return taken, chaos, began, ended


async def restored_sets(lab: IamLab) -> dict[str, set[str]]:
    """The chaos set and table as the restored cluster holds them (set key -> elements)."""
    after = await ChaosClients.open(lab.lab, CHAOS_TABLE)
    try:
        await after.final_reads(lab.lab.spec.node_ids[0])
    finally:
        await after.close()
    return {op.key: set(op.elements or []) for op in after.rec.ops if op.kind == "read_set"}


@pytest.mark.parametrize("backend", ["process", "netns"])
def test_backup_then_restore_brings_back_exactly_the_backup(tmp_path: Path, backend: str) -> None:
    backup = tmp_path / "backup"
    with started_iam_lab(tmp_path / "lab", backend) as lab:
        for i in range(20):
            assert etcdctl(lab, "put", f"app/{i:02d}", f"v{i}").returncode == 0
        asyncio.run(sql(lab, "/db/execute", ["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]))
        rows = [["INSERT INTO t(v) VALUES(?)", f"row{i}"] for i in range(10)]
        asyncio.run(sql(lab, "/db/execute", rows))
        token = asyncio.run(bot_token(lab))

        taken, chaos, began, ended = asyncio.run(backup_under_chaos(lab, backup))
        assert taken.returncode == 0, taken.stderr
        manifest = json.loads(taken.stdout)
        assert manifest["iam"]["detail"]["records"] > 0
        assert os.stat(backup).st_mode & 0o777 == 0o700
        for name in ("chainfire.db", "flaredb.sqlite", "iam.json", "manifest.json"):
            assert os.stat(backup / name).st_mode & 0o777 == 0o600
        assert b"PRIVATE KEY" not in (backup / "iam.json").read_bytes()
        checked = plasma(lab, "cluster", "backup", "verify", str(backup))
        assert checked.returncode == 0, checked.stderr

        damaged = tmp_path / "damaged"
        shutil.copytree(backup, damaged)
        with open(damaged / "flaredb.sqlite", "r+b") as f:
            f.seek(200)
            f.write(b"\xff\xff")
        refused = plasma(lab, "cluster", "backup", "verify", str(damaged))
        assert refused.returncode == 1 and "SHA-256" in refused.stderr

        # after the backup: a key, a row and a user that the restore must undo
        assert etcdctl(lab, "put", "later", "x").returncode == 0
        asyncio.run(sql(lab, "/db/execute", ["DELETE FROM t WHERE id <= 5"]))
        asyncio.run(iam(lab, "DELETE", "/v1/users/alice"))

        restored = plasma(lab, "lab", "restore", str(backup), "--dir", str(lab.lab.layout.root))
        assert restored.returncode == 0, restored.stderr
        print(restored.stdout)

        # every write acknowledged before the backup began is back; none invoked after it
        # ended is (those during it may or may not be)
        revision = int(manifest["chainfire"]["detail"]["revision"])
        for key, elements in asyncio.run(restored_sets(lab)).items():
            adds = [op for op in chaos.rec.ops if op.kind == "add" and op.key == key]
            before = {op.value for op in adds if op.complete is not None and op.complete < began}
            later = {op.value for op in adds if op.invoke > ended}
            assert before and before <= elements, (key, sorted(before - elements)[:5])
            assert not later & elements, (key, sorted(later & elements)[:5])
            # Chainfire's set is the snapshot's: exactly the adds acknowledged at a revision
            # up to the manifest's (FlareDB's rows carry no revision)
            upto = {op.value for op in adds if op.revision is not None and op.revision <= revision}
            past = {op.value for op in adds if op.revision is not None and op.revision > revision}
            assert upto <= elements and not past & elements, (key, sorted(past & elements)[:5])
        assert sorted(k for k in keys(lab) if not k.startswith("/chaos/")) == [
            f"app/{i:02d}" for i in range(20)
        ]
        counted = asyncio.run(sql(lab, "/db/request", ["SELECT count(*) FROM t"]))
        assert counted["results"][0]["values"] == [[10]]  # type: ignore[index]
        users = asyncio.run(iam(lab, "GET", "/v1/users"))
        assert "alice" in json.dumps(users)
        me = asyncio.run(iam(lab, "GET", "/v1/self", token=token))
        assert "bot" in json.dumps(me)  # signed before the backup, verified after

        # a member added after the restore gets the restored data (the new group starts
        # from a snapshot of it), not only what was written since
        everything = keys(lab)
        added = plasma(lab, "lab", "add-node", "--dir", str(lab.lab.layout.root), "--json")
        assert added.returncode == 0, added.stdout + added.stderr
        node04 = f"{lab.lab.spec.first_ip + 3}:{lab.lab.spec.ports.chainfire_client}"
        local = ["get", "", "--prefix", "--keys-only", "--consistency=s"]
        deadline = time.monotonic() + 60
        while (seen := etcdctl_as(lab, lab.tls, *local, endpoint=node04)).stdout.split() != (
            everything
        ):
            assert time.monotonic() < deadline, f"node04: {seen.stdout.split()[:5]} {seen.stderr}"
            time.sleep(0.5)


def test_verify_names_a_missing_manifest(tmp_path: Path) -> None:
    done = subprocess.run(
        [plasma_executable(), "cluster", "backup", "verify", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "manifest.json" in done.stderr
