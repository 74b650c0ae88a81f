"""``plasma provision status``: node states from the netboot server or its state file."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.netboot import state_path
from plasmacloud.provision.states import State, StateFile, load_states

SETTLED = {State.JOINED, State.FAILED}


def fetch(out: OutputLayout, server: str | None = None) -> StateFile:
    """States from ``server``'s API when given, else from the saved state file."""
    if server is None:
        return load_states(state_path(out))
    with urllib.request.urlopen(f"{server.rstrip('/')}/api/v1/nodes", timeout=10) as resp:
        return StateFile.model_validate(json.loads(resp.read()))


def settled(data: StateFile) -> bool:
    """True when every node is joined or failed (``--watch`` stops)."""
    return bool(data.nodes) and all(n.state in SETTLED for n in data.nodes.values())


def follow(
    out: OutputLayout,
    server: str | None,
    show: Callable[[StateFile, bool], None],
    watch: bool,
    interval: float,
    timeout: float,
) -> None:
    """Fetch the states and ``show`` them (with whether another reading follows); with
    ``watch``, again every ``interval`` s until every node settled or ``timeout`` s passed."""
    deadline = time.monotonic() + timeout
    while True:
        data = fetch(out, server)
        more = watch and not settled(data) and time.monotonic() <= deadline
        show(data, more)
        if not more:
            return
        time.sleep(interval)


def table(data: StateFile) -> str:
    """A plain-text table: node, MAC, state, last step, updated, error."""
    rows = [("NODE", "MAC", "STATE", "LAST STEP", "UPDATED", "ERROR")]
    rows += [
        (n.node_id, n.mac, n.state.value, n.last_step or "-", n.updated_at or "-", n.error or "")
        for n in sorted(data.nodes.values(), key=lambda n: n.node_id)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not data.nodes:
        lines.append("(no state yet: start `plasma netboot serve`)")
    lines += [
        f"unknown machine asked to boot: {mac} at {at}" for mac, at in data.unknown_macs.items()
    ]
    return "\n".join(lines)
