"""The lab machinery against a real 3-node etcd 3.4 over mTLS (the benchmark's reference).

This proves the process backend, the PKI wiring and the cluster probe on a server that
is known to be right, independently of Chainfire.
"""

from __future__ import annotations

import pytest

from plasmacloud.lab.control import Lab

pytestmark = pytest.mark.slow


async def test_etcd_lab_forms_and_survives_leader_kill(etcd_lab: Lab) -> None:
    view = await etcd_lab.wait_ready(timeout=60)
    assert view.ready
    leader = view.leader_node
    assert leader in etcd_lab.spec.node_ids
    assert all(n.members == etcd_lab.spec.node_ids for n in view.nodes)
    assert len({n.member_id for n in view.nodes}) == 3

    etcd_lab.backend.kill_node(leader)
    rest = [n for n in etcd_lab.spec.node_ids if n != leader]
    after = await etcd_lab.wait_ready(timeout=60, nodes=rest)
    assert after.leader_node in rest
    assert all((n.raft_term or 0) > (view.nodes[0].raft_term or 0) for n in after.nodes)

    etcd_lab.backend.start_node(leader)
    back = await etcd_lab.wait_ready(timeout=60)
    assert back.ready
