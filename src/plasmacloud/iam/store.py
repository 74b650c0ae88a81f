"""The small async key-value interface IAM keeps its state behind.

Production uses Chainfire (:mod:`plasmacloud.iam.etcd_store`, etcd v3 API); unit tests
and single-process servers use :class:`MemoryStore`. Every IAM node is stateless apart
from this store, so any node answers any request.

``version`` is an opaque number that changes on every write of a key (etcd's
``mod_revision``); ``0`` means "absent". Compare-and-swap on it is how concurrent IAM
nodes avoid lost updates (two logins counting failures, two nodes rotating keys).
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The store could not be reached (every endpoint tried); callers may retry later."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One stored key with its value and current version."""

    key: str
    value: bytes
    version: int


class KVStore(Protocol):
    """What IAM needs from its storage."""

    async def get(self, key: str) -> KeyValue | None:
        """The key's value and version, or ``None`` when absent."""
        ...

    async def put(self, key: str, value: bytes) -> int:
        """Store unconditionally; returns the new version."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete; ``True`` if the key existed."""
        ...

    async def range(
        self, prefix: str, start_after: str | None = None, limit: int = 0
    ) -> list[KeyValue]:
        """Keys starting with ``prefix`` in byte order, after ``start_after``; ``0`` = no limit."""
        ...

    async def compare_and_swap(self, key: str, expected_version: int, value: bytes | None) -> bool:
        """Write (or delete, when ``value`` is ``None``) only if the version still matches.

        ``expected_version=0`` means "only if absent". Returns whether it was applied.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryStore:
    """In-process :class:`KVStore` (tests, single-node development servers).

    Several servers in one process can share one instance, which is how the tests model
    three IAM nodes sharing one Chainfire cluster.
    """

    def __init__(self) -> None:
        self._data: dict[str, KeyValue] = {}
        self._keys: list[str] = []  # sorted, for range scans
        self._revision = 0
        self._lock = asyncio.Lock()

    async def get(self, key: str) -> KeyValue | None:
        return self._data.get(key)

    def _write(self, key: str, value: bytes) -> int:
        self._revision += 1
        if key not in self._data:
            bisect.insort(self._keys, key)
        self._data[key] = KeyValue(key, value, self._revision)
        return self._revision

    def _remove(self, key: str) -> bool:
        if key not in self._data:
            return False
        del self._data[key]
        self._keys.pop(bisect.bisect_left(self._keys, key))
        return True

    async def put(self, key: str, value: bytes) -> int:
        async with self._lock:
            return self._write(key, value)

    async def delete(self, key: str) -> bool:
        async with self._lock:
            return self._remove(key)

    async def range(
        self, prefix: str, start_after: str | None = None, limit: int = 0
    ) -> list[KeyValue]:
        if start_after is not None and start_after >= prefix:
            i = bisect.bisect_right(self._keys, start_after)
        else:
            i = bisect.bisect_left(self._keys, prefix)
        out: list[KeyValue] = []
        while i < len(self._keys) and self._keys[i].startswith(prefix):
            out.append(self._data[self._keys[i]])
            if limit and len(out) >= limit:
                break
            i += 1
        return out

    async def compare_and_swap(self, key: str, expected_version: int, value: bytes | None) -> bool:
        async with self._lock:
            current = self._data.get(key)
            if (current.version if current else 0) != expected_version:
                return False
            if value is None:
                self._remove(key)
            else:
                self._write(key, value)
            return True

    async def close(self) -> None:
        return None
