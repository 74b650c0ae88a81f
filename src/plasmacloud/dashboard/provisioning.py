"""The provisioning page: each node's state machine as the netboot server saved it, with
the time of every transition and the agent's last report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plasmacloud.provision.states import load_states


def provisioning_doc(state_file: Path | None) -> dict[str, Any]:
    """The nodes' states and events (newest last); ``found`` false without a state file."""
    if state_file is None or not state_file.is_file():
        return {"found": False, "state_file": str(state_file) if state_file else None}
    data = load_states(state_file)
    return {
        "found": True,
        "state_file": str(state_file),
        "nodes": [n.model_dump(mode="json") for _id, n in sorted(data.nodes.items())],
        "unknown_macs": data.unknown_macs,
    }
