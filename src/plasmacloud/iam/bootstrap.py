"""Creating the cluster's first admin once, with its credentials written to a 0600 file,
and making the operators' client certificates administrators by policy."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from plasmacloud.common.config import NodeConfig
from plasmacloud.iam.service import IamService, settings_from_config
from plasmacloud.iam.store import KVStore
from plasmacloud.iam.stores import open_store


class Outcome(StrEnum):
    """What a bootstrap run found."""

    CREATED = "created"  # the admin was created now; credentials are in the file
    EXISTING = "existing"  # done before, and the credentials file is there
    LOST = "lost"  # done before, but this file does not exist (use the one written then)


async def bootstrap_to_file(
    svc: IamService,
    out: Path,
    username: str = "admin",
    certificate_admins: Sequence[str] = (),
) -> Outcome:
    """Bootstrap through ``svc``; idempotent, secrets go only to ``out`` (mode 0600).

    Every name in ``certificate_admins`` (an operator certificate's CN) is then ensured an
    admin user, on every run: a cluster bootstrapped before it was listed gets it too.
    """
    creds = await svc.bootstrap(username, deliver=lambda c: c.write(out))
    for name in certificate_admins:
        await svc.ensure_certificate_admin(name)
    if creds is not None:
        return Outcome.CREATED
    return Outcome.EXISTING if out.exists() else Outcome.LOST


async def bootstrap_cluster(
    config: NodeConfig,
    out: Path,
    username: str = "admin",
    certificate_admins: Sequence[str] = (),
    store: KVStore | None = None,
) -> Outcome:
    """Bootstrap the cluster that ``config`` belongs to, in ``store`` (closed afterwards;
    default: its Chainfire's system keyspace, with the node's certificate)."""
    store = store or open_store(config)
    try:
        svc = IamService(store, settings_from_config(config))
        return await bootstrap_to_file(svc, out, username, certificate_admins)
    finally:
        await store.close()
