"""Cluster-view logic and the health probe against a tiny local HTTP server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from plasmacloud.cluster.probe import ClusterView, NodeView, check_health, describe

OK = {"chainfire": (True, "ok")}


def _node(node_id: str, member_id: int, leader: int, members: int = 3) -> NodeView:
    names = [f"node0{i}" for i in range(1, members + 1)]
    return NodeView(node_id, OK, member_id=member_id, leader_id=leader, members=names)


def test_ready_needs_one_agreed_leader_that_is_a_probed_member() -> None:
    agreed = ClusterView([_node("node01", 1, 2), _node("node02", 2, 2)], expected_members=3)
    assert agreed.ready and agreed.leader_node == "node02"
    split = ClusterView([_node("node01", 1, 1), _node("node02", 2, 2)], expected_members=3)
    assert not split.ready and split.leader_id is None
    assert "no agreed leader" in describe(split)
    unknown = ClusterView([_node("node01", 1, 9), _node("node02", 2, 9)], expected_members=3)
    assert unknown.leader_node is None and not unknown.ready
    none = ClusterView([_node("node01", 1, 0), _node("node02", 2, 0)], expected_members=3)
    assert none.leader_id is None


def test_ready_needs_every_member_and_health() -> None:
    short = ClusterView([_node("node01", 1, 1, members=2)], expected_members=3)
    assert not short.ready
    assert "sees 2 members" in describe(short)
    sick = NodeView("node01", {"chainfire": (False, "HTTP 503")}, 1, 1, members=["a", "b", "c"])
    view = ClusterView([sick], expected_members=3)
    assert not view.ready
    assert "unhealthy (chainfire HTTP 503)" in describe(view)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def health(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "good":
            return web.json_response({"health": "true"})
        if kind == "false":
            return web.json_response({"health": "false"})
        if kind == "text":
            return web.Response(text="ready")
        return web.Response(status=503, text="no leader")

    app = web.Application()
    app.router.add_get("/{kind}", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_check_health_reads_status_and_etcd_json(server: str) -> None:
    assert (await check_health(f"{server}/good", None))[0]
    assert (await check_health(f"{server}/text", None)) == (True, "ready")
    ok, detail = await check_health(f"{server}/false", None)
    assert not ok and "false" in detail
    ok, detail = await check_health(f"{server}/down", None)
    assert not ok and detail == "HTTP 503: no leader"


async def test_check_health_on_a_closed_port_says_cannot_connect() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ok, detail = await check_health(f"http://127.0.0.1:{port}/health", None)
    assert not ok and detail.startswith("cannot connect")
