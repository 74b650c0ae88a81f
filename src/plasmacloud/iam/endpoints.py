"""Where IAM answers, derived from a node's ``cluster-config.json`` (one rule for all)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the CLI names the services at start
    from plasmacloud.common.config import NodeConfig, PeerConfig


def iam_url(peer: PeerConfig, tls: bool) -> str:
    """One node's IAM base URL (https when the cluster runs TLS)."""
    return f"{'https' if tls else 'http'}://{peer.ip}:{peer.ports.iam_http}"


def iam_urls(config: NodeConfig) -> list[str]:
    """Every IAM URL of the cluster, this node's first (what a Verifier should be given)."""
    peers = [config.me] + [p for p in config.peers if p.node_id != config.node_id]
    return [iam_url(p, config.tls.enabled) for p in peers]


def issuer_for(config: NodeConfig) -> str:
    """One issuer for the whole cluster: the first peer's IAM URL (same on every node)."""
    first = sorted(config.peers, key=lambda p: p.node_id)[0]
    return iam_url(first, config.tls.enabled)
