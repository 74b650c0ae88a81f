"""The guards and the per-node rewrite of quorum-loss recovery: refused while the survivor
and the members that answer make a quorum (unless forced) or while the survivor's own
services run; every Raft group the node has data for is rewritten, Chainfire's required."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from plasmacloud.cluster.control import ClusterError
from plasmacloud.cluster.recover import check_quorum_lost, recover_node, rewrite_node
from plasmacloud.common.config import NodeConfig, PeerConfig
from plasmacloud.raft.codec import NORMAL, HardState, LogEntry
from plasmacloud.raft.disk import OsDisk
from plasmacloud.raft.nodeconfig import raft_config, raft_dir
from plasmacloud.raft.storage import Storage


def _config(tmp_path: Path) -> NodeConfig:
    """node01 of three on a random 127.x.y.11-13 (the default ports: nothing else binds
    there), data in ``tmp_path``."""
    net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"
    peers = [
        PeerConfig(node_id=f"node0{i}", hostname=f"node0{i}", ip=f"{net}.1{i}") for i in (1, 2, 3)
    ]
    return NodeConfig(
        node_id="node01",
        hostname="node01",
        ip=f"{net}.11",
        peers=peers,
        data_dir=tmp_path,
        tls={"enabled": False},
    )


@contextlib.contextmanager
def listening(cfg: NodeConfig, node_id: str) -> Iterator[None]:
    """A socket on the node's Chainfire client port, as a running node has."""
    peer = cfg.peer(node_id)
    with socket.socket() as s:
        s.bind((str(peer.ip), peer.ports.chainfire_client))
        s.listen()
        yield


async def _write_group(cfg: NodeConfig, service: str) -> None:
    members = raft_config(cfg, service, lambda p: p.chainfire_peer).members
    s = Storage(OsDisk(), str(raft_dir(cfg, service)))
    s.open()
    s.save_hard_state(HardState(3, "node02", members))
    s.append([LogEntry.make(1, 3, NORMAL, b"x")])
    await s.sync()
    s.close()


async def test_a_quorum_that_still_answers_refuses_unless_forced(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    with listening(cfg, "node03"):
        with pytest.raises(ClusterError, match="2 of 3 members, a quorum"):
            await check_quorum_lost(cfg.peers, "node01", force=False)
        assert await check_quorum_lost(cfg.peers, "node01", force=True) == ["node03"]


async def test_a_lost_majority_lets_the_survivor_recover(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert await check_quorum_lost(cfg.peers, "node01", force=False) == []


async def test_a_running_survivor_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    await _write_group(cfg, "chainfire")
    with listening(cfg, "node01"), pytest.raises(ClusterError, match="still run"):
        await recover_node(cfg, force=False)


async def test_every_group_with_data_is_rewritten_to_the_survivor_alone(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    await _write_group(cfg, "flaredb")
    with pytest.raises(ClusterError, match="no Chainfire data"):
        rewrite_node(cfg)
    await _write_group(cfg, "chainfire")

    done = await recover_node(cfg, force=False)

    assert done.reachable == [] and sorted(done.groups) == ["chainfire", "flaredb"]
    for forced in done.groups.values():
        assert list(forced.members) == ["node01"] and len(forced.previous) == 3


async def test_a_node_without_flaredb_has_only_chainfire_rewritten(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    await _write_group(cfg, "chainfire")
    assert list(rewrite_node(cfg)) == ["chainfire"]
