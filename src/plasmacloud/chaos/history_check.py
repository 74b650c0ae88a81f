"""Run every history checker: one :class:`Verdict` per property."""

from __future__ import annotations

from plasmacloud.chaos.history import History, Verdict
from plasmacloud.chaos.history_register import DEFAULT_MAX_STATES, check_registers
from plasmacloud.chaos.history_set import check_sets
from plasmacloud.chaos.history_watch import check_watches


def check_history(history: History, max_states: int = DEFAULT_MAX_STATES) -> list[Verdict]:
    """Registers linearizable, sets without lost/phantom elements, watch streams sound."""
    return [check_registers(history, max_states), check_sets(history), check_watches(history)]


def passed(verdicts: list[Verdict]) -> bool:
    """True only when every property was verified (``unknown`` is not a pass)."""
    return all(v.status == "ok" for v in verdicts)
