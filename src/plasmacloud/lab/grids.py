"""The tables every lab reports share: per-service health, the leader by name."""

from __future__ import annotations

from plasmacloud.cluster.probe import ClusterView
from plasmacloud.lab.surface import Grid


def health_text(view_health: dict[str, tuple[bool, str]], width: int) -> str:
    """Each service's health: ok, or the first ``width`` characters of why not."""
    return ", ".join(
        f"{s} [green]ok[/green]" if ok else f"{s} [red]{d[:width]}[/red]"
        for s, (ok, d) in view_health.items()
    )


def leader_caption(view: ClusterView) -> str:
    """Under a cluster table: the leader every node agrees on, or that there is none."""
    agreed = view.leader_node
    return f"leader agreed: {agreed}" if agreed else "[red]no agreed leader[/red]"


def leader_name(view: ClusterView, leader_id: int | None) -> str:
    """The node a member id names (``-`` if unknown, red ``none`` without a leader)."""
    names = {v.member_id: v.node_id for v in view.nodes if v.member_id}
    return names.get(leader_id or 0, "-") if leader_id else "[red]none[/red]"


def cluster_grid(view: ClusterView, title: str) -> Grid:
    """Nodes x (health per service, members, leader, term) as the probe saw them."""
    rows = [
        (
            v.node_id,
            health_text(v.health, 50),
            (v.error and f"[red]{v.error[:50]}[/red]") or str(len(v.members)),
            leader_name(view, v.leader_id),
            str(v.raft_term or "-"),
        )
        for v in view.nodes
    ]
    columns = ("node", "health", "members", "leader", "term")
    return Grid(title, columns, rows, leader_caption(view))
