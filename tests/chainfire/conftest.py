"""Shared fixtures for Chainfire tests: a store driven through encoded commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from plasmacloud.chainfire.commands import encode
from plasmacloud.chainfire.mvcc import MvccStore
from plasmacloud.raft.api import Entry


class Applier:
    """Feeds requests to a store as consecutive committed log entries."""

    def __init__(self, store: MvccStore) -> None:
        self.store = store
        self.index = store.applied_index()

    def __call__(self, *requests: Message) -> Any:
        """Apply requests as one batch; return the single result or the list."""
        entries = []
        for req in requests:
            self.index += 1
            entries.append(Entry(self.index, 1, encode(req)))
        results = self.store.apply(entries)
        return results[0] if len(results) == 1 else results


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MvccStore]:
    s = MvccStore(tmp_path / "kv.db")
    yield s
    s.close()


@pytest.fixture
def apply(store: MvccStore) -> Applier:
    return Applier(store)
