"""An in-memory state machine that records every command: used by the simulation, the
benchmark and the tests (it makes "which command was applied at which index" observable)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from plasmacloud.raft.api import Entry


class MemoryStateMachine:
    """Appends each command to a list; ``apply`` returns the entry's index."""

    def __init__(self) -> None:
        self.applied: dict[int, bytes] = {}  # index -> command (since the last restore)
        self.base_index = 0  # index of the snapshot restored last
        self.base: list[bytes] = []  # commands covered by that snapshot
        self.index = 0

    def apply(self, entries: Sequence[Entry]) -> list[int]:
        out = []
        for e in entries:
            assert e.index > self.index, f"apply out of order: {e.index} after {self.index}"
            self.applied[e.index] = e.data
            self.index = e.index
            out.append(e.index)
        return out

    def applied_index(self) -> int:
        return 0  # nothing is persisted: rebuilt from snapshot + log on restart

    def commands(self) -> list[bytes]:
        """Every command applied, in order (snapshot contents first)."""
        return self.base + [self.applied[i] for i in sorted(self.applied)]

    def snapshot(self) -> bytes:
        return b"".join(struct.pack("<I", len(c)) + c for c in self.commands())

    def snapshot_reader(self) -> Callable[[], bytes]:
        data = self.snapshot()
        return lambda: data

    def restore(self, data: bytes, index: int) -> None:
        cmds = []
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack_from("<I", data, pos)
            cmds.append(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
        self.base, self.base_index, self.index = cmds, index, index
        self.applied = {}
