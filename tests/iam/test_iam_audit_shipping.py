"""Services' decisions shipped to IAM's audit log with the node's certificate (AuditShipper).

IAM runs over TLS with a one-node cluster config; the shipper presents that node's
certificate, as Chainfire and FlareDB do.
"""

from __future__ import annotations

import json

import aiohttp
import pytest
from iam_fixtures import TlsIam, free_port
from prometheus_client import CollectorRegistry

from plasmacloud.iam.audit import AUDIT_PREFIX
from plasmacloud.iam.authz import AuditRecord, AuditShipper, Verifier, service_auth
from plasmacloud.iam.policy import Decision, Policy, parse_policy
from plasmacloud.iam.principal import Principal
from plasmacloud.iam.store import MemoryStore
from plasmacloud.iam.upstream import IamRefused, IamUnavailable

DENY = Decision(False, "implicit-deny")
APP_ONLY = parse_policy(
    {"Statement": [{"Effect": "Allow", "Action": "chainfire:*", "Resource": "key/app/*"}]}
)


class AppOnly:
    """Policies of every principal: chainfire:* on key/app/* (no IAM call needed)."""

    async def policies_for(self, principal: Principal) -> list[tuple[str, Policy]]:
        return [("app", APP_ONLY)]


async def _stored_entries(store: MemoryStore) -> list[dict[str, object]]:
    return [e for kv in await store.range(AUDIT_PREFIX) for e in json.loads(kv.value)]


async def test_node_certificate_ships_decisions_queryable_by_service(tls_iam: TlsIam) -> None:
    # the body claims another node: the certificate decides which node is recorded
    shipper = AuditShipper([tls_iam.url], "chainfire@node02", ssl_context=tls_iam.node_ctx)
    v = Verifier([tls_iam.url], ssl_context=tls_iam.node_ctx, policy_source=AppOnly())
    v_audited = Verifier(
        [tls_iam.url], ssl_context=tls_iam.node_ctx, policy_source=AppOnly(), audit=shipper
    )
    try:
        p = await v_audited.authenticate(tls_iam.admin_token)
        assert (await v_audited.authorize(p, "chainfire:Put", "key/app/x")).allowed
        assert not (await v_audited.authorize(p, "chainfire:Put", "key/other/x")).allowed
        assert (await v.authorize(p, "chainfire:Put", "key/app/y")).allowed  # not audited
        assert shipper.buffered == 2
        assert await shipper.flush() == 2
        assert (shipper.sent, shipper.dropped, shipper.buffered) == (2, 0, 0)
    finally:
        await shipper.close()
        await v.close()
        await v_audited.close()
    raw = json.dumps(await _stored_entries(tls_iam.store))
    assert tls_iam.admin_token not in raw and p.jti not in raw  # no secrets in the log

    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {tls_iam.admin_token}"}
        params = {"source": "chainfire", "decision": "Deny", "sub": p.sub}
        async with http.get(
            f"{tls_iam.url}/v1/audit", params=params, headers=headers, ssl=tls_iam.anonymous_ctx
        ) as r:
            assert r.status == 200
            items = (await r.json())["items"]
    assert [
        (e["source"], e["sub"], e["action"], e["resource"], e["decision"], e["reason"])
        for e in items
    ] == [("chainfire@node01", p.sub, "chainfire:Put", "key/other/x", "Deny", "implicit-deny")]
    by_node = await tls_iam.svc.audit.query(100, source="chainfire@node01")
    assert [e["resource"] for e in by_node.entries] == ["key/app/x", "key/other/x"]
    assert (await tls_iam.svc.audit.query(100, source="flaredb")).entries == []


async def test_the_hook_a_serve_command_composes_ships_as_service_at_node(
    tls_iam: TlsIam,
) -> None:
    assert service_auth("flaredb", []) is None  # no IAM URL: auth off
    factory = service_auth("flaredb", [tls_iam.url])
    assert factory is not None
    registry = CollectorRegistry()  # the service's: its /metrics shows the shipper's
    hook = factory(tls_iam.config, registry)
    hook.start()
    try:
        p = await hook.authenticate(tls_iam.admin_token)
        assert (await hook.authorize(p, "flaredb:Query", "db/main")).allowed
        node = await hook.authenticate_certificate("node01")  # the config's node ids
        assert node.sub == "node:node01"
    finally:
        await hook.close()  # flushes the shipper
    assert registry.get_sample_value("plasma_audit_records_shipped_total") == 1
    entries = (await tls_iam.svc.audit.query(100, source="flaredb@node01")).entries
    assert [(e["action"], e["resource"], e["decision"]) for e in entries] == [
        ("flaredb:Query", "db/main", "Allow")
    ]


@pytest.mark.parametrize("who", ["anonymous", "operator"])
async def test_append_without_token_needs_a_node_certificate(tls_iam: TlsIam, who: str) -> None:
    ctx = tls_iam.anonymous_ctx if who == "anonymous" else tls_iam.operator_ctx
    shipper = AuditShipper([tls_iam.url], "chainfire@node01", ssl_context=ctx)
    shipper(AuditRecord(1.8e9, "user:mallory", "chainfire:Put", "key/x", DENY))
    try:
        with pytest.raises(IamRefused, match="HTTP 401"):
            await shipper.flush()
        assert (shipper.sent, shipper.buffered) == (0, 1)  # kept for a later retry
    finally:
        await shipper.close()
    assert await _stored_entries(tls_iam.store) == []


async def test_batches_and_a_refused_batch_does_not_block_the_rest(tls_iam: TlsIam) -> None:
    shipper = AuditShipper(
        [tls_iam.url], "flaredb@node01", ssl_context=tls_iam.node_ctx, batch_size=2
    )
    bad = AuditRecord(1.8e9, "user:" + "x" * 300, "flaredb:Execute", "db/main", DENY)
    records = [bad] + [
        AuditRecord(1.8e9 + i, "user:alice", "flaredb:Execute", "db/main", DENY) for i in range(5)
    ]
    for r in records:
        shipper(r)
    try:
        # batches [bad, 0] (refused by validation: dropped), [1, 2], [3, 4]
        assert await shipper.flush() == 4
        assert (shipper.sent, shipper.dropped, shipper.buffered) == (4, 2, 0)
    finally:
        await shipper.close()
    assert len(await tls_iam.store.range(AUDIT_PREFIX)) == 2  # one key per accepted batch
    assert [e["at"] for e in await _stored_entries(tls_iam.store)] == [
        1.8e9 + i for i in range(1, 5)
    ]


async def test_iam_unreachable_drops_oldest_and_counts_them() -> None:
    port = free_port("127.0.0.97")  # nothing listens here
    shipper = AuditShipper([f"http://127.0.0.97:{port}"], "chainfire@node01", max_buffer=3)
    try:
        for i in range(5):
            shipper(AuditRecord(1.8e9 + i, "user:a", "chainfire:Put", "key/x", DENY))
        assert (shipper.buffered, shipper.dropped) == (3, 2)
        with pytest.raises(IamUnavailable):
            await shipper.flush()
        shipper.start(interval=0.05)  # the background loop logs and keeps going
        await shipper.close()
        assert (shipper.sent, shipper.buffered, shipper.dropped) == (0, 3, 2)
        reg = shipper.registry
        assert reg.get_sample_value("plasma_audit_records_dropped_total") == 2
        assert reg.get_sample_value("plasma_audit_records_buffered") == 3
    finally:
        await shipper.close()


async def test_close_ships_what_is_left(tls_iam: TlsIam) -> None:
    shipper = AuditShipper([tls_iam.url], "chainfire@node01", ssl_context=tls_iam.node_ctx)
    shipper.start(interval=3600)
    shipper(AuditRecord(1.8e9, "user:a", "chainfire:Range", "key/a*", DENY))
    await shipper.close()
    assert shipper.sent == 1
    assert [e["resource"] for e in await _stored_entries(tls_iam.store)] == ["key/a*"]
