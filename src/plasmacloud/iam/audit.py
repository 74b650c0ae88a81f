"""The audit log of authorization decisions, kept in the store (shared by all nodes).

Keys are ``/plasmacloud/iam/audit/<ms timestamp>-<random>`` so a prefix range returns
entries oldest first and pages naturally; entries older than ``retention`` are pruned in
small batches as new ones arrive.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plasmacloud.iam.principal import AuditRecord
from plasmacloud.iam.store import KVStore

AUDIT_PREFIX = "/plasmacloud/iam/audit/"


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
        entry = {
            "at": rec.at,
            "sub": rec.sub,
            "action": rec.action,
            "resource": rec.resource,
            **rec.decision.to_json(),
            "source": source or f"iam@{self._node}",
        }
        # Sequence keeps this node's records in order within one millisecond; the random
        # tail keeps keys from different nodes apart.
        self._seq += 1
        key = f"{AUDIT_PREFIX}{int(rec.at * 1000):015d}-{self._seq:010d}-{secrets.token_hex(3)}"
        await self._store.put(key, json.dumps(entry).encode())
        if self._seq % 100 == 0:
            await self._prune()

    async def _prune(self) -> None:
        cutoff = self._clock() - self._retention
        for kv in await self._store.range(AUDIT_PREFIX, limit=500):
            if json.loads(kv.value)["at"] >= cutoff:
                break
            await self._store.delete(kv.key)

    async def query(
        self,
        limit: int,
        after: str | None = None,
        sub: str | None = None,
        action: str | None = None,
        decision: str | None = None,
    ) -> AuditPage:
        """Entries oldest first; filters are exact matches. Scans at most 20 pages of input."""
        out: list[dict[str, Any]] = []
        cursor = AUDIT_PREFIX + after if after else None
        for _ in range(20):
            kvs = await self._store.range(AUDIT_PREFIX, start_after=cursor, limit=limit * 2)
            if not kvs:
                return AuditPage(out, None)
            for kv in kvs:
                cursor = kv.key
                entry = json.loads(kv.value)
                if (
                    (sub is None or entry["sub"] == sub)
                    and (action is None or entry["action"] == action)
                    and (decision is None or entry["decision"] == decision)
                ):
                    entry["id"] = kv.key[len(AUDIT_PREFIX) :]
                    out.append(entry)
                    if len(out) == limit:
                        return AuditPage(out, entry["id"])
        return AuditPage(out, cursor[len(AUDIT_PREFIX) :] if cursor else None)
