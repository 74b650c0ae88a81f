"""The cluster-config.json model: validation messages, resolution, schema, round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from plasmacloud.common.config import (
    ChainfireOptions,
    Compaction,
    ConfigError,
    FlareDBOptions,
    NodeConfig,
    PeerConfig,
    ServicePorts,
    node_config_schema,
)


def _peers() -> list[PeerConfig]:
    return [
        PeerConfig(node_id=f"node0{i}", hostname=f"node0{i}", ip=f"192.168.100.1{i}")
        for i in (1, 2, 3)
    ]


def _node(**over: object) -> NodeConfig:
    base: dict[str, object] = {
        "node_id": "node01",
        "hostname": "node01",
        "ip": "192.168.100.11",
        "peers": _peers(),
    }
    base.update(over)
    return NodeConfig.model_validate(base)


def test_peer_hostnames_resolve_from_the_config_without_dns() -> None:
    cfg = _node(hosts={"node03": "192.168.100.13"})
    assert cfg.resolve("node02") == "192.168.100.12"
    assert cfg.resolve("node03") == "192.168.100.13"


def test_unresolvable_hostname_says_how_to_fix() -> None:
    cfg = _node()
    with pytest.raises(ConfigError, match="hosts"):
        cfg.resolve("no-such-host.invalid")


def test_a_member_added_to_the_file_later_resolves_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "cluster-config.json"
    _node().dump(path)
    running = NodeConfig.load(path)
    with pytest.raises(ConfigError, match="node04"):
        running.resolve("node04")
    node04 = PeerConfig(node_id="node04", hostname="node04", ip="192.168.100.14")
    _node(peers=[*_peers(), node04]).dump(path)
    assert running.resolve("node04") == "192.168.100.14"
    assert [p.node_id for p in running.reloaded().peers][-1] == "node04"
    assert running.reloaded() == NodeConfig.load(path)  # equal settings, whatever the file
    path.write_text("{not json")  # a half-edited file: keep what was read before
    assert [p.node_id for p in running.reloaded().peers][-1] == "node04"
    assert _node().reloaded() == _node()  # built in memory: nothing to re-read


def test_node_must_be_among_its_peers() -> None:
    with pytest.raises(ValueError, match=r"node09.*must be listed among the peers"):
        _node(node_id="node09")


def test_peer_entry_must_agree_with_the_node() -> None:
    with pytest.raises(ValueError, match="make them agree"):
        _node(ip="192.168.100.99")


def test_duplicate_peers_are_rejected() -> None:
    with pytest.raises(ValueError, match="more than once"):
        _node(peers=[*_peers(), _peers()[0]])


def test_clashing_ports_name_both_fields() -> None:
    with pytest.raises(ValueError, match=r"ports\.flaredb_http and ports\.chainfire_client"):
        ServicePorts(flaredb_http=2379)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="boostrap"):
        _node(boostrap=True)


def test_load_reports_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "cluster-config.json"
    raw = json.loads(_node().model_dump_json())
    raw["ip"] = "not-an-ip"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"cluster-config.json: ip:"):
        NodeConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        NodeConfig.load(path)
    with pytest.raises(ConfigError, match="no such file"):
        NodeConfig.load(tmp_path / "missing.json")


def test_round_trip_and_schema(tmp_path: Path) -> None:
    cfg = _node(bind_address="127.0.0.11")
    cfg.dump(tmp_path / "c.json")
    again = NodeConfig.load(tmp_path / "c.json")
    assert again == cfg
    assert again.listen_host == "127.0.0.11"
    schema = node_config_schema()
    assert "peers" in schema["required"]  # type: ignore[operator]
    assert schema["title"] == "PlasmaCloud cluster-config.json"


@given(st.text(max_size=40))
def test_arbitrary_hostnames_never_crash_validation(name: str) -> None:
    try:
        PeerConfig(node_id="n1", hostname=name, ip="10.0.0.1")
    except ValueError as exc:
        assert "hostname" in str(exc)


def test_raft_timing_defaults_are_the_engines_and_older_files_still_load(tmp_path: Path) -> None:
    raw = json.loads(_node().model_dump_json())
    del raw["raft"]  # a cluster-config.json written before the field existed
    path = tmp_path / "cluster-config.json"
    path.write_text(json.dumps(raw))
    cfg = NodeConfig.load(path)
    assert cfg.raft.heartbeat_s == 0.05
    assert cfg.raft.election_timeout_s == (0.3, 0.6)


def test_raft_timing_from_the_file_and_in_the_schema(tmp_path: Path) -> None:
    raw = json.loads(_node().model_dump_json())
    raw["raft"] = {"heartbeat_ms": 200, "election_timeout_ms": [1000, 2000]}
    path = tmp_path / "cluster-config.json"
    path.write_text(json.dumps(raw))
    cfg = NodeConfig.load(path)
    assert cfg.raft.heartbeat_s == 0.2
    assert cfg.raft.election_timeout_s == (1.0, 2.0)
    defs = node_config_schema()["$defs"]
    assert set(defs["RaftTiming"]["properties"]) == {"heartbeat_ms", "election_timeout_ms"}  # type: ignore[index]


@pytest.mark.parametrize(
    ("raft", "message"),
    [
        ({"election_timeout_ms": [600, 300]}, r"raft: .*\[600, 300\].*1 <= min < max"),
        ({"election_timeout_ms": [500, 500]}, r"min < max"),
        ({"election_timeout_ms": [300]}, r"raft\.election_timeout_ms"),
        ({"heartbeat_ms": 200}, r"heartbeat_ms \(200\) must be at most half"),
        ({"heartbeat_ms": 0}, r"raft\.heartbeat_ms"),
        ({"heartbeat": 50}, r"raft\.heartbeat"),
    ],
)
def test_bad_raft_timing_names_the_field(tmp_path: Path, raft: object, message: str) -> None:
    raw = json.loads(_node().model_dump_json())
    raw["raft"] = raft
    path = tmp_path / "cluster-config.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=message):
        NodeConfig.load(path)


def test_chainfire_and_flaredb_run_raft_with_the_configs_timing(tmp_path: Path) -> None:
    from plasmacloud.chainfire.server import ChainfireServer
    from plasmacloud.common.config import TLSConfig
    from plasmacloud.flaredb.server import FlareDBServer

    slow = {"heartbeat_ms": 250, "election_timeout_ms": [1000, 2000]}
    cfg = _node(raft=slow, tls=TLSConfig(enabled=False), data_dir=tmp_path)
    chainfire = ChainfireServer(cfg)._raft_node(state_machine=None)
    flaredb = FlareDBServer(cfg).raft
    for raft in (chainfire, flaredb):
        assert raft.config.election_timeout == (1.0, 2.0)
        assert raft.config.heartbeat_interval == 0.25


def test_compaction_is_on_by_default_and_reads_etcds_retention_forms() -> None:
    default = Compaction()
    assert (default.mode, default.enabled, default.period_s) == ("periodic", True, 3600.0)
    assert Compaction(retention="2").period_s == 7200.0  # a bare number is hours, as in etcd
    assert Compaction(mode="revision", retention="1000").revisions == 1000
    assert not Compaction(retention="0").enabled
    assert not Compaction(mode="revision", retention="0").enabled
    assert not Compaction(retention="0h").enabled  # a zero duration is off too, as in etcd
    assert Compaction(retention="1h30m").period_s == 5400.0


def test_compaction_errors_say_what_to_write() -> None:
    with pytest.raises(ValidationError, match="number of revisions"):
        Compaction(mode="revision", retention="1h")
    with pytest.raises(ValidationError, match="like 1h, 30m"):
        Compaction(retention="soon")


def test_scheduled_vacuum_is_off_by_default_and_its_interval_is_a_duration() -> None:
    assert FlareDBOptions().vacuum_interval_s == 0
    assert FlareDBOptions(auto_vacuum_interval="24h").vacuum_interval_s == 86400.0
    with pytest.raises(ValidationError, match="like 24h or 168h"):
        FlareDBOptions(auto_vacuum_interval="weekly")


def test_chainfire_frontends_default_off_and_bounded() -> None:
    assert ChainfireOptions().frontend_workers() == 0
    assert ChainfireOptions(frontends=4).frontend_workers() == 4
    usable = len(os.sched_getaffinity(0))
    assert ChainfireOptions(frontends="auto").frontend_workers() == min(64, usable - 1)
    with pytest.raises(ValidationError, match="frontends"):
        ChainfireOptions(frontends="all")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="frontends"):
        ChainfireOptions(frontends=-1)
