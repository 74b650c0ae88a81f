"""The overview against a running lab: ``plasma dashboard``'s JSON says what ``plasma lab
status --json`` says about the same cluster; and its rows read the probes right."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import aiohttp
import pytest
from dashboard_browser import Served, plasma

from plasmacloud.cluster.probe import ClusterView, NodeView
from plasmacloud.dashboard.overview import overview_doc
from plasmacloud.flaredb.probe import FlareNodeView
from plasmacloud.lab.control import Lab

# what may move between two probes of a healthy, idle cluster: writes land, files grow
MOVING = {"raft_index", "raft_applied_index", "db_size", "applied_index", "commit_index"}


def _steady(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in MOVING}


async def _overview(served: Served) -> dict[str, Any]:
    jar = aiohttp.CookieJar(unsafe=True)  # keeps the session cookie of 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.get(served.login_url) as page:
            assert page.status == 200 and str(page.url) == served.base + "/"
        async with session.get(served.base + "/api/overview.json") as resp:
            assert resp.status == 200
            doc: dict[str, Any] = await resp.json()
            return doc


@pytest.mark.slow
async def test_the_dashboard_and_lab_status_agree(full_lab: Lab, served: Served) -> None:
    dash = await _overview(served)
    proc = subprocess.run(
        plasma("lab", "status", "--json", "--dir", str(full_lab.layout.root)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)

    assert dash["ready"] is status["ready"] is True
    assert dash["leader"] == status["leader"] is not None
    lab_nodes = [
        _steady({k: v for k, v in n.items() if k not in ("ip", "processes")})
        for n in status["nodes"]
    ]
    assert [_steady(n) for n in dash["nodes"]] == lab_nodes
    assert dash["flaredb"]["leader"] == status["flaredb"]["leader"] is not None
    assert [_steady(n) for n in dash["flaredb"]["nodes"]] == [
        _steady(n) for n in status["flaredb"]["nodes"]
    ]
    # the rows the page shows: every node x service up, one leader per Raft group, the
    # one both commands name
    assert sorted((r["node"], r["service"]) for r in dash["rows"] if r["up"]) == sorted(
        (n, s) for n in ("node01", "node02", "node03") for s in ("chainfire", "flaredb", "iam")
    )
    assert dash["leaders"] == {
        "chainfire": [status["leader"]],
        "flaredb": [status["flaredb"]["leader"]],
    }


def _cf(node: str, member: int, leader: int, term: int, commit: int, applied: int) -> NodeView:
    return NodeView(
        node,
        {"chainfire": (True, "ok"), "flaredb": (True, "ok")},
        member_id=member,
        leader_id=leader,
        raft_term=term,
        raft_index=commit,
        raft_applied_index=applied,
        members=["node01", "node02", "node03"],
    )


def test_rows_name_the_newest_leader_and_count_lag_from_it() -> None:
    view = ClusterView(
        [
            _cf("node01", 1, 1, 2, 40, 40),  # deposed: still believes it leads, term 2
            _cf("node02", 2, 2, 3, 50, 50),  # the leader of term 3
            _cf("node03", 3, 2, 3, 50, 45),
            NodeView("node04", {"chainfire": (False, "cannot connect")}, error="UNAVAILABLE"),
            _cf("node05", 5, 0, 3, 50, 50),  # answers, but knows no leader
        ],
        expected_members=5,
    )
    flare = [
        FlareNodeView(
            "node01", "node02", role="Follower", term=3, commit_index=7, raft_applied_index=6
        ),
        FlareNodeView(
            "node02", "node02", role="Leader", term=3, commit_index=9, raft_applied_index=9
        ),
        FlareNodeView("node03", error="ClientConnectorError"),
    ]
    rows = {(r["service"], r["node"]): r for r in overview_doc(view, flare)["rows"]}
    assert rows["chainfire", "node02"]["role"] == "leader"
    assert rows["chainfire", "node03"]["lag"] == 5 and rows["chainfire", "node03"]["up"]
    assert rows["chainfire", "node01"]["lag"] == 10
    down = rows["chainfire", "node04"]
    assert not down["up"] and down["role"] is None and down["error"] == "UNAVAILABLE"
    lost = rows["chainfire", "node05"]
    assert lost["up"] and lost["role"] is None and lost["error"] == "knows no leader"
    assert rows["flaredb", "node01"]["lag"] == 3 and rows["flaredb", "node01"]["role"] == "follower"
    assert not rows["flaredb", "node03"]["up"]  # its FlareDB did not answer
    assert overview_doc(view, flare)["leaders"] == {
        "chainfire": ["node01", "node02"],  # both claim it: the page shows the conflict
        "flaredb": ["node02"],
    }
