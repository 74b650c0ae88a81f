"""IAM nodes sharing a real etcd v3 store (what Chainfire provides in production)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from iam_fixtures import ClusterFactory, free_port

from plasmacloud.iam.authz import Verifier
from plasmacloud.iam.etcd_store import EtcdStore
from plasmacloud.iam.passwords import FAST_FOR_TESTS
from plasmacloud.iam.server import start_server
from plasmacloud.iam.service import IamService, IamSettings
from plasmacloud.iam.tokens import TokenSettings

pytestmark = pytest.mark.slow


async def test_three_nodes_on_etcd(iam_cluster: ClusterFactory, etcd_endpoint: str) -> None:
    store = EtcdStore([etcd_endpoint])
    try:
        c = await iam_cluster(3, store=store)
        admin = await c.token(node=0)
        status, _ = await c.call(
            "POST", "/v1/users", admin, node=1, json={"name": "dave", "password": "dave-password"}
        )
        assert status == 201
        dave = await c.token(
            node=2, grant_type="password", username="dave", password="dave-password"
        )
        v = Verifier([c.nodes[1].url, c.nodes[2].url], revocation_refresh=0)
        try:
            assert (await v.authenticate(dave)).username == "dave"
            async with c.http.post(f"{c.nodes[0].url}/oauth2/revoke", data={"token": dave}) as r:
                assert r.status == 200
            with pytest.raises(Exception, match="revoked"):
                await v.authenticate(dave)
        finally:
            await v.close()
    finally:
        for kv in await store.range("/"):
            await store.delete(kv.key)
        await store.close()


async def test_concurrent_bootstrap_creates_one_admin(etcd_endpoint: str) -> None:
    stores = [EtcdStore([etcd_endpoint]) for _ in range(3)]
    try:
        services = [
            IamService(
                s, IamSettings(f"n{i}", TokenSettings(issuer="http://x"), hashing=FAST_FOR_TESTS)
            )
            for i, s in enumerate(stores)
        ]
        results = await asyncio.gather(*(svc.bootstrap() for svc in services))
        assert sum(r is not None for r in results) == 1
        keys = await asyncio.gather(*(svc.keyring.signing_key() for svc in services))
        assert len({k.kid for k in keys}) == 1  # one signing key wins the race too
    finally:
        for kv in await stores[0].range("/"):
            await stores[0].delete(kv.key)
        for s in stores:
            await s.close()


async def test_health_says_unavailable_when_the_store_is_down() -> None:
    host = "127.0.0.82"
    store = EtcdStore([f"{host}:{free_port(host)}"], timeout=1.0)  # nothing listens there
    svc = IamService(store, IamSettings("n1", TokenSettings(issuer="http://x")))
    port = free_port(host)
    runner = await start_server(svc, host, port)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{port}/health") as r:
                assert r.status == 503 and (await r.json())["health"] == "false"
            form = {"grant_type": "password", "username": "a", "password": "bbbbbbbb"}
            async with http.post(f"http://{host}:{port}/oauth2/token", data=form) as r:
                assert r.status == 503 and (await r.json())["error"] == "unavailable"
                assert r.headers["Retry-After"] == "1"
    finally:
        await runner.cleanup()
        await store.close()
