"""The audit log: batches stored under one key, paged entry by entry, filtered, pruned."""

from __future__ import annotations

from plasmacloud.iam.audit import AUDIT_PREFIX, AuditLog
from plasmacloud.iam.policy import Decision
from plasmacloud.iam.principal import AuditRecord
from plasmacloud.iam.store import MemoryStore

ALLOW = Decision(True, "allowed", "p", "S")
DENY = Decision(False, "implicit-deny")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_batches_page_in_order_with_filters() -> None:
    store = MemoryStore()
    log = AuditLog(store, "node01", clock=Clock())
    t = 1_800_000_000.0
    await log.record(AuditRecord(t, "user:a", "chainfire:Put", "key/1", ALLOW))
    batch = [
        AuditRecord(t + i, "user:b" if i % 2 else "user:a", "chainfire:Range", f"key/{i}", DENY)
        for i in range(7)
    ]
    await log.record_many(batch, "chainfire@node02")
    await log.record(AuditRecord(t + 10, "user:a", "flaredb:Query", "db/main", ALLOW))
    assert len(await store.range(AUDIT_PREFIX)) == 3  # one key per batch

    seen: list[str] = []
    token = None
    for _ in range(10):
        page = await log.query(limit=3, after=token)
        seen += [e["resource"] for e in page.entries]
        token = page.next_token
        if token is None or not page.entries:
            break
    assert seen == ["key/1", *[f"key/{i}" for i in range(7)], "db/main"]

    denied_a = await log.query(limit=100, sub="user:a", decision="Deny")
    assert [e["resource"] for e in denied_a.entries] == ["key/0", "key/2", "key/4", "key/6"]
    assert {e["source"] for e in denied_a.entries} == {"chainfire@node02"}
    assert (await log.query(limit=100, action="flaredb:Query")).entries[0]["reason"] == "allowed"


async def test_old_batches_are_pruned() -> None:
    clock = Clock()
    store = MemoryStore()
    log = AuditLog(store, "node01", retention=3600, clock=clock)
    for i in range(50):
        await log.record(AuditRecord(clock.now + i, "user:a", "x:y", "r", ALLOW))
    clock.now += 7200
    for i in range(50):  # the 100th write prunes
        await log.record(AuditRecord(clock.now + i, "user:a", "x:y", "r", ALLOW))
    assert len(await store.range(AUDIT_PREFIX)) == 50
