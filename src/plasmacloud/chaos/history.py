"""Operation histories of a chaos run: the records, JSON-lines I/O, and one verdict per property.

A history is what the clients saw, nothing more: every operation with its process, key,
invoke and completion times, outcome and result, plus the events each watch stream
delivered. ``ok`` means the client heard success, ``fail`` means the operation certainly
had no effect, ``unknown`` means it may or may not have taken effect (timeout, node died
mid-request); checkers must accept both possibilities for ``unknown``.

The checkers are pure functions of a :class:`History` (see ``history_register``,
``history_set``, ``history_watch``) so a saved history can be re-checked later
(``plasma lab chaos --replay FILE``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["ok", "fail", "unknown"]
OpKind = Literal["read", "write", "cas", "add", "read_set"]
Status = Literal["ok", "violation", "unknown"]


class Op(BaseModel):
    """One client operation.

    ``value`` is what a write/cas/add puts, ``expected`` what a cas compares against;
    ``result`` is the value a register read saw (``None``: key absent), ``succeeded``
    whether a completed cas matched, ``elements`` what a set read returned, and
    ``revision`` the store revision an acknowledged write was given. An ``add`` of element
    ``e`` to the set ``key`` is stored as key ``key/e`` with value ``e``.
    ``complete`` is ``None`` for operations whose completion was never seen.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    process: int
    kind: OpKind
    key: str
    invoke: float
    complete: float | None
    outcome: Outcome
    value: str | None = None
    expected: str | None = None
    result: str | None = None
    succeeded: bool | None = None
    elements: list[str] | None = None
    revision: int | None = None
    node: str | None = None  # which node served it (for people reading a violation)


class WatchEvent(BaseModel):
    """One event a watch stream delivered (``watcher`` identifies the logical stream)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    watcher: int
    revision: int
    key: str
    value: str | None  # None for a delete
    received: float


class WatchSpan(BaseModel):
    """What one logical watch stream covered: revisions ``start``..``end`` inclusive must all
    have been delivered to it (``end`` is the store revision it was caught up to)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    watcher: int
    start: int
    end: int


class History(BaseModel):
    """Everything a run recorded; ``meta`` holds seed, faults, durations for people."""

    model_config = ConfigDict(extra="forbid")

    meta: dict[str, Any] = Field(default_factory=dict)
    ops: list[Op] = Field(default_factory=list)
    events: list[WatchEvent] = Field(default_factory=list)
    spans: list[WatchSpan] = Field(default_factory=list)


class Verdict(BaseModel):
    """The outcome of one property check, with the evidence a person needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    property: str
    status: Status
    checked: int  # how many keys / elements / streams were examined
    details: list[str] = Field(default_factory=list)


def worst(statuses: Iterable[Status]) -> Status:
    """violation beats unknown beats ok (an empty set of checks is ok)."""
    seen = set(statuses)
    if "violation" in seen:
        return "violation"
    return "unknown" if "unknown" in seen else "ok"


def save_history(path: Path, history: History) -> None:
    """Write ``history`` as JSON lines: a meta line, then one line per op, event, span."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fh.write(_line("meta", {"meta": history.meta}))
        for op in history.ops:
            fh.write(_line("op", op.model_dump()))
        for ev in history.events:
            fh.write(_line("event", ev.model_dump()))
        for span in history.spans:
            fh.write(_line("span", span.model_dump()))


def _line(record: str, body: dict[str, Any]) -> str:
    return json.dumps({"record": record, **body}, sort_keys=True) + "\n"


def load_history(path: Path) -> History:
    """Read a file written by :func:`save_history` (errors name the bad line)."""
    history = History()
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
            record = doc.pop("record")
            if record == "meta":
                history.meta = doc["meta"]
            elif record == "op":
                history.ops.append(Op.model_validate(doc))
            elif record == "event":
                history.events.append(WatchEvent.model_validate(doc))
            elif record == "span":
                history.spans.append(WatchSpan.model_validate(doc))
            else:
                raise ValueError(f"unknown record type {record!r}")
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from exc
    return history
