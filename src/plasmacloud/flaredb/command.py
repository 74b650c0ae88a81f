"""What FlareDB writes into one Raft log entry.

One HTTP request becomes one entry (so a bulk insert or a transaction costs one round of
replication). The entry carries everything the replicas need to reach the same state:
the statements as rewritten by the proposer, whether they form one transaction, and the
seed for ``random()``/``randomblob()``, chosen once on the proposing node.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plasmacloud.flaredb.models import RequestError, Statement

# Seeds need to differ between entries, not to be secret (random() is a Mersenne Twister
# seeded with them either way); one os.urandom-seeded generator avoids a syscall per write.
_SEEDS = random.Random()
EXECUTE = "execute"
LOAD = "load"  # replace the whole database with the statements (a dump)


@dataclass(frozen=True, slots=True)
class Command:
    """A batch of statements applied together on every replica."""

    statements: tuple[Statement, ...]
    transaction: bool = False
    seed: int = 0
    kind: str = EXECUTE

    @classmethod
    def new(
        cls, statements: Sequence[Statement], transaction: bool = False, kind: str = EXECUTE
    ) -> Command:
        """A command with a fresh random seed (call on the proposing node only)."""
        return cls(tuple(statements), transaction, _SEEDS.getrandbits(63), kind)

    def encode(self) -> bytes:
        """The entry's bytes: runs of statements sharing one SQL text store it once."""
        runs: list[list[Any]] = []  # [sql, [params of each statement in the run]]
        for s in self.statements:
            if runs and runs[-1][0] == s.sql:
                runs[-1][1].append(s.wire_params())
            else:
                runs.append([s.sql, [s.wire_params()]])
        doc: dict[str, Any] = {"k": self.kind, "g": runs, "seed": self.seed}
        if self.transaction:
            doc["tx"] = True
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Command:
        """Read an entry back; raises :class:`RequestError` on anything malformed."""
        try:
            doc = json.loads(data)
            kind = doc["k"]
            if "g" in doc:
                # Validated by the proposer before encoding, so no second check per value.
                stmts = tuple(
                    Statement(sql, p if isinstance(p, dict) else tuple(p))
                    for sql, params in doc["g"]
                    for p in params
                )
            else:  # entries written before runs were grouped
                stmts = tuple(Statement.from_json(s, i) for i, s in enumerate(doc["s"], start=1))
            return cls(stmts, bool(doc.get("tx", False)), int(doc["seed"]), kind)
        except (ValueError, KeyError, TypeError) as exc:
            raise RequestError(f"malformed log entry: {exc}") from exc
