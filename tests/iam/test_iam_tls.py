"""IAM over TLS with the node's certificates (client certificates optional for IAM)."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from iam_fixtures import free_port

from plasmacloud.common.config import NodeConfig
from plasmacloud.iam.authz import Verifier
from plasmacloud.iam.endpoints import iam_urls
from plasmacloud.iam.passwords import FAST_FOR_TESTS
from plasmacloud.iam.server import iam_ssl_context, start_server
from plasmacloud.iam.service import IamService, settings_from_config
from plasmacloud.iam.store import MemoryStore
from plasmacloud.provision.pki import init_ca, issue_node


async def test_tls_server_serves_clients_without_client_certificates(tmp_path: Path) -> None:
    ip = "127.0.0.93"
    ca = init_ca(tmp_path / "pki")
    issued = issue_node(ca, tmp_path / "secrets", "node01", ["node01"], [ip])
    port = free_port(ip)
    peer = {"node_id": "node01", "hostname": "node01", "ip": ip}
    cfg = NodeConfig.model_validate(
        {
            **peer,
            "peers": [{**peer, "ports": {"iam_http": port}}],
            "ports": {"iam_http": port},
            "tls": {
                "enabled": True,
                "ca_file": str(issued.ca_path),
                "cert_file": str(issued.cert_path),
                "key_file": str(issued.key_path),
                "client_cert_auth": True,
            },
            "data_dir": str(tmp_path / "data"),
        }
    )
    settings = settings_from_config(cfg)
    assert settings.tokens.issuer == f"https://{ip}:{port}"
    svc = IamService(MemoryStore(), replace(settings, hashing=FAST_FOR_TESTS))
    creds = await svc.bootstrap()
    assert creds is not None
    runner = await start_server(svc, ip, port, iam_ssl_context(cfg))
    client_ctx = ssl.create_default_context(cafile=str(issued.ca_path))
    url = f"https://{ip}:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            form = {
                "grant_type": "client_credentials",
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
            }
            async with http.post(f"{url}/oauth2/token", data=form, ssl=client_ctx) as r:
                assert r.status == 200
                token = (await r.json())["access_token"]
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://{ip}:{port}/health") as r:
                    await r.read()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.get(f"{url}/health") as r:  # system CAs do not know ours
                    await r.read()
        for v in (Verifier([url], ssl_context=client_ctx), Verifier.for_config(cfg)):
            try:
                assert (await v.authenticate(token)).sub == f"sa:{creds.client_id}"
            finally:
                await v.close()
        assert iam_urls(cfg) == [url]
    finally:
        await runner.cleanup()
