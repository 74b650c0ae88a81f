"""The audit log of authorization decisions, kept in the store (shared by all nodes).

Keys are ``/plasmacloud/iam/audit/<ms timestamp>-<random>`` so a prefix range returns
entries oldest first and pages naturally; entries older than ``retention`` are pruned in
small batches as new ones arrive.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from plasmacloud.iam.principal import AuditRecord
from plasmacloud.iam.store import KVStore

AUDIT_PREFIX = "/plasmacloud/iam/audit/"


def _source_names(source: str) -> tuple[str, str]:
    """The names a ``source`` filter matches: ``chainfire@node02`` and ``chainfire``."""
    return source, source.partition("@")[0]


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[dict[str, Any]]
    next_token: str | None


class AuditLog:
    """Append decisions; list them with filters and pagination."""

    def __init__(
        self,
        store: KVStore,
        node: str,
        retention: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ):
        self._store = store
        self._node = node
        self._retention = retention
        self._clock = clock
        self._seq = 0

    async def record(self, rec: AuditRecord, source: str | None = None) -> None:
        """Store one decision (``source``: which service decided; default this node's IAM)."""
        await self.record_many([rec], source)

    async def record_many(self, recs: Sequence[AuditRecord], source: str | None = None) -> None:
        """Store a batch of decisions under one key (one store write for a whole batch)."""
        if not recs:
            return
        entries = [
            {
                "at": r.at,
                "sub": r.sub,
                "action": r.action,
                "resource": r.resource,
                **r.decision.to_json(),
                "source": source or f"iam@{self._node}",
            }
            for r in recs
        ]
        # Sequence keeps this node's batches in order within one millisecond; the random
        # tail keeps keys from different nodes apart.
        self._seq += 1
        stamp = int(recs[0].at * 1000)
        key = f"{AUDIT_PREFIX}{stamp:015d}-{self._seq:010d}-{secrets.token_hex(3)}"
        await self._store.put(key, json.dumps(entries).encode())
        if self._seq % 100 == 0:
            await self._prune()

    async def _prune(self) -> None:
        cutoff = self._clock() - self._retention
        for kv in await self._store.range(AUDIT_PREFIX, limit=500):
            if json.loads(kv.value)[-1]["at"] >= cutoff:
                break
            await self._store.delete(kv.key)

    async def query(
        self,
        limit: int,
        after: str | None = None,
        sub: str | None = None,
        action: str | None = None,
        decision: str | None = None,
        source: str | None = None,
    ) -> AuditPage:
        """Entries oldest first; filters are exact matches, except that ``source`` names a
        service (``chainfire``: every node's) or one node's (``chainfire@node02``). Scans at
        most 20 pages of input.

        Entry ids (and page tokens) are ``<batch key>.<index in batch>``.
        """
        out: list[dict[str, Any]] = []
        batch_key, _, index = (after or "").partition(".")
        skip = int(index) + 1 if index.isdigit() else 0
        pending = []
        if batch_key:  # finish the batch the last page stopped in
            kv = await self._store.get(AUDIT_PREFIX + batch_key)
            if kv is not None:
                pending.append(kv)
        cursor = AUDIT_PREFIX + batch_key if batch_key else None
        for _ in range(20):
            kvs = pending + await self._store.range(AUDIT_PREFIX, start_after=cursor, limit=limit)
            pending = []
            if not kvs:
                return AuditPage(out, None)
            for kv in kvs:
                cursor = kv.key
                name = kv.key[len(AUDIT_PREFIX) :]
                for i, entry in enumerate(json.loads(kv.value)):
                    if name == batch_key and i < skip:
                        continue
                    if (
                        (sub is None or entry["sub"] == sub)
                        and (action is None or entry["action"] == action)
                        and (decision is None or entry["decision"] == decision)
                        and (source is None or source in _source_names(entry["source"]))
                    ):
                        entry["id"] = f"{name}.{i}"
                        out.append(entry)
                        if len(out) == limit:
                            return AuditPage(out, entry["id"])
                batch_key = ""  # only the first batch is resumed mid-way
        last = cursor[len(AUDIT_PREFIX) :] if cursor else None
        return AuditPage(out, f"{last}.999999" if last else None)
