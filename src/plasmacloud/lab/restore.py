"""Restore a lab from a ``plasma cluster backup`` in one step (the per-node commands a
real cluster runs, here on every lab node): the lab stops, every node's data goes,
Chainfire is laid down from the snapshot with IAM's records, the lab starts as a new
cluster at the snapshot's revision, and FlareDB's database is loaded back."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plasmacloud.chainfire.restore import (
    member_addresses,
    read_snapshot,
    read_system_records,
    restore_member,
)
from plasmacloud.cluster.backup import Manifest, load_flaredb, verify_backup
from plasmacloud.lab.control import Lab


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    seconds: float  # from stopping the lab until every service answered again


async def restore_lab(
    lab: Lab, backup: Path, ready_timeout: float, progress: Callable[[str], None]
) -> Restored:
    """Replace the lab's whole state with ``backup``'s (checked before anything stops)."""
    manifest = verify_backup(backup)
    snapshot = read_snapshot(backup / manifest.chainfire.file)
    records = read_system_records(backup / manifest.iam.file)
    started = time.monotonic()
    progress("stopping the lab")
    lab.down()
    for cfg in lab.configs():
        progress(f"{cfg.node_id}: Chainfire at revision {manifest.chainfire.detail['revision']}")
        for service in lab.services:
            shutil.rmtree(cfg.data_path(service.name), ignore_errors=True)
        restore_member(snapshot, cfg.data_path("chainfire"), member_addresses(cfg), records)
    progress("starting the lab as a new cluster")
    lab.up()
    await lab.wait_ready(timeout=ready_timeout)
    if any(s.name == "flaredb" for s in lab.services):
        progress("loading FlareDB's database")
        database = (backup / manifest.flaredb.file).read_bytes()
        await asyncio.to_thread(load_flaredb, lab.configs()[0].peers, lab.operator_tls, database)
    return Restored(manifest, time.monotonic() - started)
