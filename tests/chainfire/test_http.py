"""/health (etcd's JSON shape) and /metrics on the metrics port."""

from __future__ import annotations

import aiohttp
import grpc
import pytest

from plasmacloud.chainfire.http import start_http
from plasmacloud.chainfire.proto import rpc_pb2 as pb

from .conftest import Served, loopback_host


async def test_health_and_metrics(served: Served) -> None:
    host = loopback_host()
    runner = await start_http(served.node, host, 0)
    try:
        port = runner.addresses[0][1]
        base = f"http://{host}:{port}"
        await served.kv.Put(pb.PutRequest(key=b"k", value=b"v"))
        with pytest.raises(grpc.aio.AioRpcError):
            await served.kv.Range(pb.RangeRequest())  # an error, counted by its code
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as r:
                assert r.status == 200 and await r.json() == {"health": "true"}
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert (
                'chainfire_grpc_requests_total{code="OK",method="etcdserverpb.KV/Put"} 1.0' in text
            )
            assert (
                'chainfire_grpc_requests_total{code="INVALID_ARGUMENT",method="etcdserverpb.KV/Range"}'
                in text
            )
            assert "chainfire_revision 2.0" in text
            assert "chainfire_db_size_bytes" in text and "chainfire_watchers 0.0" in text
            served.raft.leader = None
            async with http.get(f"{base}/health") as r:
                assert r.status == 503 and await r.json() == {"health": "false"}
            served.raft.leader = "node01"
            await served.maintenance.Alarm(
                pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=1, alarm=pb.NOSPACE)
            )
            async with http.get(f"{base}/health") as r:
                assert r.status == 503
    finally:
        await runner.cleanup()
