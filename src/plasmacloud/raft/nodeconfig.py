"""A service's :class:`RaftConfig` from its node's ``cluster-config.json``.

Chainfire and FlareDB each run a Raft group over the same cluster: one rule for where a
group keeps its data, which port it listens on, how its members are addressed (by
hostname, resolved through the config, so no DNS is needed) and its timing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from plasmacloud.common.config import NodeConfig, ServicePorts
from plasmacloud.common.tls import client_context, server_context
from plasmacloud.raft.node import RaftConfig


def raft_dir(config: NodeConfig, service: str) -> Path:
    """Where ``service`` keeps its Raft log, hard state and snapshot on this node."""
    return config.data_path(service) / "raft"


def raft_members(config: NodeConfig, port: Callable[[ServicePorts], int]) -> dict[str, str]:
    """The group's members as the engine addresses them: node id -> hostname:``port``."""
    return {p.node_id: f"{p.hostname}:{port(p.ports)}" for p in config.peers}


def raft_config(
    config: NodeConfig, service: str, port: Callable[[ServicePorts], int], **options: Any
) -> RaftConfig:
    """The Raft group of ``service`` on this node: data under ``<data_dir>/<service>/raft``,
    peers on ``port`` of each node's ports, (m)TLS from the config's certificates; peers
    are dialled at the resolved IP with the hostname as SNI, so their certificates must
    name it. ``options`` are further :class:`RaftConfig` fields (snapshot threshold,
    metrics registry, the TLS contexts when the caller already holds them)."""
    settings: dict[str, Any] = {
        "server_ssl": server_context(config.tls),
        "client_ssl": client_context(config.tls),
        "election_timeout": config.raft.election_timeout_s,
        "heartbeat_interval": config.raft.heartbeat_s,
        **options,
    }
    return RaftConfig(
        node_id=config.node_id,
        data_dir=raft_dir(config, service),
        listen_host=config.listen_host,
        listen_port=port(config.ports),
        members=raft_members(config, port),
        bootstrap=config.bootstrap,
        resolve=config.resolve,
        **settings,
    )
