"""``lab.json``: what a lab is and which processes it started (so `down` stops only those)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from plasmacloud.common.files import write_model
from plasmacloud.lab.spec import LabSpec


class ProcessRecord(BaseModel):
    """One started service process; ``argv`` is how we recognise it again in /proc."""

    model_config = ConfigDict(extra="forbid")

    node_id: str
    service: str
    pid: int
    pgid: int
    argv: list[str]
    started_at: float = Field(default_factory=time.time)


class LabState(BaseModel):
    """Everything ``lab.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    backend: str = "process"
    spec: LabSpec = LabSpec()
    # services the lab runs on every node, by registry name
    services: list[str] = Field(default_factory=list)
    started_at: float | None = None
    processes: list[ProcessRecord] = Field(default_factory=list)
    # the `plasma` executable the services run (`plasma cluster rolling-restart --upgrade`
    # switches it); None: the one beside this Python
    plasma: str | None = None

    def records(self, node_id: str) -> list[ProcessRecord]:
        """Recorded processes of one node."""
        return [p for p in self.processes if p.node_id == node_id]

    def forget(self, node_id: str, service: str | None = None) -> None:
        """Drop records of a node (or of one of its services) once they are stopped."""
        self.processes = [
            p
            for p in self.processes
            if not (p.node_id == node_id and (service is None or p.service == service))
        ]


def load_state(path: Path) -> LabState | None:
    """Read ``lab.json``; ``None`` when the lab was never brought up here."""
    if not path.exists():
        return None
    return LabState.model_validate_json(path.read_text())


def save_state(path: Path, state: LabState) -> None:
    """Write ``lab.json`` atomically (a crash mid-write never leaves half a file)."""
    write_model(path, state)
