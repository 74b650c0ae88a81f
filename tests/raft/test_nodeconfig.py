"""Chainfire's and FlareDB's Raft groups are derived from cluster-config.json by one rule."""

from __future__ import annotations

from pathlib import Path

from plasmacloud.common.config import NodeConfig, PeerConfig, ServicePorts
from plasmacloud.raft.nodeconfig import raft_config


def _config(tmp_path: Path) -> NodeConfig:
    peers = [
        PeerConfig(
            node_id=f"node0{i}",
            hostname=f"host{i}",
            ip=f"192.168.100.1{i}",
            ports=ServicePorts(chainfire_peer=7000 + i, flaredb_raft=8000 + i),
        )
        for i in (1, 2, 3)
    ]
    return NodeConfig(
        node_id="node02",
        hostname="host2",
        ip="192.168.100.12",
        peers=peers,
        ports=ServicePorts(chainfire_peer=7002, flaredb_raft=8002),
        data_dir=tmp_path,
        tls={"enabled": False},
        raft={"heartbeat_ms": 100, "election_timeout_ms": [500, 900]},
    )


def test_each_service_group_has_its_own_directory_port_and_peer_addresses(
    tmp_path: Path,
) -> None:
    cfg = _config(tmp_path)
    chainfire = raft_config(cfg, "chainfire", lambda p: p.chainfire_peer)
    flaredb = raft_config(cfg, "flaredb", lambda p: p.flaredb_raft, snapshot_threshold=7)
    assert chainfire.data_dir == cfg.data_path("chainfire") / "raft"
    assert flaredb.data_dir == cfg.data_path("flaredb") / "raft"
    assert (chainfire.listen_port, flaredb.listen_port) == (7002, 8002)
    # peers by hostname (resolved through the config), each on its own port
    assert chainfire.members == {
        "node01": "host1:7001",
        "node02": "host2:7002",
        "node03": "host3:7003",
    }
    assert flaredb.members["node03"] == "host3:8003"
    assert chainfire.resolve is not None and chainfire.resolve("host3") == "192.168.100.13"
    for raft in (chainfire, flaredb):
        assert raft.node_id == "node02" and raft.bootstrap == cfg.bootstrap
        assert (raft.election_timeout, raft.heartbeat_interval) == ((0.5, 0.9), 0.1)
        assert raft.server_ssl is None and raft.client_ssl is None  # TLS off in this config
    assert flaredb.snapshot_threshold == 7  # options are further RaftConfig fields
