"""The provisioning state machine of each node (like Ironic's, much smaller).

::

    unknown -> booting -> installing <-> installed -> joined
                  ^           |               |            |
                  +-- failed <+---------------+------------+   (any state can fail;
                                                               a failed node may boot again;
                                                               the agent may re-run)

The netboot server moves a node to ``booting`` when it fetches its iPXE script; the
first-boot agent reports the rest. State is saved to a JSON file after every change
so ``plasma provision status`` can read it with or without the server running.
"""

from __future__ import annotations

import datetime as dt
import json
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from plasmacloud.common.files import write_model


class State(StrEnum):
    UNKNOWN = "unknown"
    BOOTING = "booting"
    INSTALLING = "installing"
    INSTALLED = "installed"
    JOINED = "joined"
    FAILED = "failed"


# Allowed moves. Re-entering the same state is allowed (agents retry, reboots repeat).
TRANSITIONS: dict[State, set[State]] = {
    State.UNKNOWN: {State.BOOTING, State.FAILED},
    State.BOOTING: {State.BOOTING, State.INSTALLING, State.FAILED},
    State.INSTALLING: {State.INSTALLING, State.INSTALLED, State.FAILED},
    State.INSTALLED: {State.INSTALLED, State.INSTALLING, State.JOINED, State.BOOTING, State.FAILED},
    State.JOINED: {State.JOINED, State.BOOTING, State.FAILED},
    State.FAILED: {State.FAILED, State.BOOTING, State.INSTALLING},
}
MAX_EVENTS = 50  # per node; older events are dropped so the file stays small


class TransitionError(ValueError):
    """A move the state machine does not allow."""


class Event(BaseModel):
    """One thing that happened to a node (a state change or an agent step)."""

    at: str
    state: State
    step: str | None = None
    status: str | None = None
    message: str = ""


class NodeStatus(BaseModel):
    """A node's current state and recent history."""

    node_id: str
    mac: str
    state: State = State.UNKNOWN
    updated_at: str | None = None
    last_step: str | None = None
    error: str | None = None
    events: list[Event] = Field(default_factory=list)


class StateFile(BaseModel):
    """Everything the netboot server tracks, as saved on disk."""

    nodes: dict[str, NodeStatus] = Field(default_factory=dict)
    unknown_macs: dict[str, str] = Field(
        default_factory=dict, description="MAC -> last time a machine not in the spec asked"
    )


def now_iso() -> str:
    """The current time as records here carry it (UTC, milliseconds: ordered as strings)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class StateStore:
    """Node states backed by a JSON file (written atomically after every change)."""

    def __init__(self, path: Path, nodes: dict[str, str]) -> None:
        """``nodes`` maps node_id -> MAC for every node in the spec."""
        self.path = path
        self.data = load_states(path)
        for node_id, mac in nodes.items():
            current = self.data.nodes.get(node_id)
            if current is None or current.mac != mac:
                self.data.nodes[node_id] = NodeStatus(node_id=node_id, mac=mac)
        for stale in set(self.data.nodes) - set(nodes):
            del self.data.nodes[stale]
        self.save()

    def get(self, node_id: str) -> NodeStatus:
        return self.data.nodes[node_id]

    def transition(
        self,
        node_id: str,
        to: State,
        step: str | None = None,
        status: str | None = None,
        message: str = "",
    ) -> NodeStatus:
        """Move a node to ``to`` (TransitionError if not allowed) and record the event."""
        node = self.data.nodes[node_id]
        if to not in TRANSITIONS[node.state]:
            raise TransitionError(f"{node_id}: cannot go from {node.state} to {to}")
        node.state = to
        node.updated_at = now_iso()
        if step:
            node.last_step = step
        node.error = message if to == State.FAILED else None
        node.events.append(
            Event(at=node.updated_at, state=to, step=step, status=status, message=message)
        )
        del node.events[:-MAX_EVENTS]
        self.save()
        return node

    def saw_unknown(self, mac: str) -> None:
        """Remember a machine that asked to boot but is not in the spec."""
        self.data.unknown_macs[mac] = now_iso()
        self.save()

    def save(self) -> None:
        write_model(self.path, self.data)


def load_states(path: Path) -> StateFile:
    """Read a state file (an empty one if it does not exist)."""
    try:
        return StateFile.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        return StateFile()
