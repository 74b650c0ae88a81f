"""The QEMU lab's bring-up waits (lab/qemu_bringup.py) against a stand-in backend: they
stop on the right reading and say what they should, without VMs."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from plasmacloud.iam.bootstrap import Outcome
from plasmacloud.iam.credentials import AdminCredentials
from plasmacloud.lab.qemu_bringup import bootstrap_admin_within, follow_installs
from plasmacloud.provision.states import NodeStatus, State, StateFile


def _reading(**states: State) -> StateFile:
    return StateFile(
        nodes={
            n: NodeStatus(node_id=n, mac="52:54:00:00:00:01", state=s) for n, s in states.items()
        }
    )


class _Provisioning:
    """``provisioning()`` answering the given readings in turn (the last one repeats)."""

    def __init__(self, *readings: StateFile) -> None:
        self.readings = list(readings)
        self.calls = 0

    def provisioning(self) -> StateFile:
        self.calls += 1
        return self.readings[min(self.calls, len(self.readings)) - 1]


def test_follow_installs_shows_every_reading_until_the_wanted_nodes_are_installed() -> None:
    backend = _Provisioning(
        _reading(node01=State.BOOTING, node02=State.FAILED),
        _reading(node01=State.INSTALLED, node02=State.FAILED),
    )
    shown: list[StateFile] = []
    done, states = follow_installs(
        backend,
        ["node01"],
        time.monotonic() + 60,
        shown.append,
        poll_s=0,
    )
    assert done and states == {"node01": State.INSTALLED}  # node02 is not wanted
    assert shown == backend.readings


def test_follow_installs_gives_up_on_a_failed_node_or_at_the_deadline() -> None:
    failing = _Provisioning(_reading(node01=State.INSTALLING, node02=State.FAILED))
    done, states = follow_installs(
        failing,
        ["node01", "node02"],
        time.monotonic() + 60,
        lambda _d: None,
        poll_s=0,
    )
    assert not done and states["node02"] == State.FAILED and failing.calls == 1
    slow = _Provisioning(_reading(node01=State.INSTALLING))
    done, _states = follow_installs(slow, ["node01"], time.monotonic() - 1, lambda _d: None)
    assert not done and slow.calls == 1


def _iam_backend(tmp_path: Path, outcomes: list[Any]) -> Any:
    """A backend whose ``bootstrap_iam`` raises or returns the given outcomes in turn
    (writing the admin's file on CREATED, as the real one does)."""
    admin = tmp_path / "admin.json"

    async def bootstrap_iam() -> Outcome:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome == Outcome.CREATED:
            AdminCredentials("admin", "pw", "cid", "secret").write(admin)
        return outcome

    return SimpleNamespace(bootstrap_iam=bootstrap_iam, paths=SimpleNamespace(admin=admin))


def test_bootstrap_admin_within_retries_until_chainfire_takes_it(tmp_path: Path) -> None:
    outcomes: list[Any] = [
        ConnectionError("not formed"),
        ConnectionError("no leader"),
        Outcome.CREATED,
    ]
    warned: list[str] = []
    admin = bootstrap_admin_within(_iam_backend(tmp_path, outcomes), 60, warned.append, poll_s=0)
    assert admin is not None and admin.username == "admin"
    assert outcomes == [] and warned == []


def test_bootstrap_admin_within_stops_at_its_wait_and_warns_of_a_lost_file(
    tmp_path: Path,
) -> None:
    outcomes: list[Any] = [ConnectionError("not formed")]
    assert bootstrap_admin_within(_iam_backend(tmp_path, outcomes), 0, print, poll_s=0) is None
    warned: list[str] = []
    lost = _iam_backend(tmp_path, [Outcome.LOST])
    assert bootstrap_admin_within(lost, 0, warned.append, poll_s=0) is None
    assert len(warned) == 1 and "admin.json is gone" in warned[0]
