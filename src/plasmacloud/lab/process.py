"""The ``process`` backend: every node's services are local processes on 127.0.0.x.

Each service runs in its own session (its own process group) so signals reach exactly
it and its children. ``lab.json`` records pid, pgid and argv; before signalling a
recorded pid we check ``/proc/PID/cmdline`` still ends with that argv, so a pid the
kernel reused for another program is never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time

from plasmacloud.cluster.control import NodeStatus, ServiceProcess
from plasmacloud.common.config import NodeConfig
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.layout import LabLayout
from plasmacloud.lab.pids import cmdline, runs_argv
from plasmacloud.lab.services import ServiceSpec, plasma_executable
from plasmacloud.lab.state import LabState, ProcessRecord, save_state

STOP_GRACE_S = 10.0
KILL_WAIT_S = 5.0


def is_ours(rec: ProcessRecord) -> bool:
    """True if ``rec.pid`` is alive and still runs the argv we started."""
    return runs_argv(rec.pid, rec.argv)


def _wait_gone(recs: list[ProcessRecord], timeout: float) -> list[ProcessRecord]:
    """Wait until none of ``recs`` runs any more; return the ones still running."""
    deadline = time.monotonic() + timeout
    alive = [r for r in recs if is_ours(r)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [r for r in alive if is_ours(r)]
    return alive


def _signal_group(rec: ProcessRecord, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(rec.pgid, sig)


class ProcessBackend:
    """Runs lab nodes as local process groups; state is persisted in ``lab.json``."""

    name = "process"

    def __init__(
        self, layout: LabLayout, state: LabState, services: tuple[ServiceSpec, ...]
    ) -> None:
        self.layout = layout
        self.state = state
        self.services = services

    # -- the NodeBackend contract -------------------------------------------------------

    def up(self) -> None:
        for node_id in self.state.spec.node_ids:
            self.start_node(node_id)
        if self.state.started_at is None:
            self.state.started_at = time.time()
        self._save()

    def start_node(self, node_id: str) -> None:
        self._check_node(node_id)
        for svc in self.services:
            self._start_service(node_id, svc)

    def stop_node(self, node_id: str) -> None:
        self._check_node(node_id)
        self._stop(self.state.records(node_id))

    def kill_node(self, node_id: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self._check_node(node_id)
        for rec in self.state.records(node_id):
            if not is_ours(rec):
                self.state.forget(node_id, rec.service)
                continue
            _signal_group(rec, sig)
            if sig == signal.SIGKILL:
                if _wait_gone([rec], KILL_WAIT_S):
                    raise LabError(f"{node_id}/{rec.service} (pid {rec.pid}) survived SIGKILL")
                self.state.forget(node_id, rec.service)
        self._save()

    def node_status(self, node_id: str) -> NodeStatus:
        self._check_node(node_id)
        out = []
        for svc in self.services:
            rec = next((r for r in self.state.records(node_id) if r.service == svc.name), None)
            if rec is None:
                out.append(ServiceProcess(svc.name, False, None, "not started"))
            elif is_ours(rec):
                out.append(ServiceProcess(svc.name, True, rec.pid, "running"))
            elif cmdline(rec.pid) is not None:
                out.append(
                    ServiceProcess(
                        svc.name, False, rec.pid, "stale record: pid reused by another program"
                    )
                )
            else:
                out.append(ServiceProcess(svc.name, False, rec.pid, "exited (see its log)"))
        return NodeStatus(node_id, out)

    def down(self) -> None:
        self._stop(list(self.state.processes))
        self.state.processes = []
        self.state.started_at = None
        self._save()

    def wrap_argv(self, node_id: str, argv: list[str]) -> list[str]:
        """The command that launches ``argv`` for ``node_id``. Other backends prefix it
        (``ip netns exec NS``); the launched process still ends up running ``argv``,
        which is what the record keeps and :func:`is_ours` matches."""
        return argv

    # -- helpers -------------------------------------------------------------------------

    def _check_node(self, node_id: str) -> None:
        if node_id not in self.state.spec.node_ids:
            raise LabError(
                f"no node {node_id!r} in this lab (nodes: {', '.join(self.state.spec.node_ids)})"
            )

    def _start_service(self, node_id: str, svc: ServiceSpec) -> None:
        old = next((r for r in self.state.records(node_id) if r.service == svc.name), None)
        if old is not None and is_ours(old):
            return
        self.state.forget(node_id, svc.name)
        config_path = self.layout.config_path(node_id)
        if not config_path.exists():
            raise LabError(f"{config_path} is missing; run `plasma lab up` to render it")
        plasma = self.state.plasma or plasma_executable()
        argv = svc.argv(config_path, NodeConfig.load(config_path), plasma)
        log_path = self.layout.log_path(node_id, svc.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            log.write(f"\n=== plasma lab: {stamp} start {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self.wrap_argv(node_id, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.layout.node_dir(node_id),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # own process group: signals reach only it
            )
        self.state.processes.append(
            ProcessRecord(node_id=node_id, service=svc.name, pid=proc.pid, pgid=proc.pid, argv=argv)
        )
        self._save()

    def _stop(self, recs: list[ProcessRecord]) -> None:
        """SIGTERM every live one of ``recs`` at once, SIGKILL whatever outlives the grace
        period, verify all are gone, then forget them."""
        live = [r for r in recs if is_ours(r)]
        for rec in live:
            _signal_group(rec, signal.SIGTERM)
            # a node frozen with `plasma lab kill -s STOP` only sees SIGTERM once resumed
            _signal_group(rec, signal.SIGCONT)
        survivors = _wait_gone(live, STOP_GRACE_S)
        for rec in survivors:
            _signal_group(rec, signal.SIGKILL)
        stuck = _wait_gone(survivors, KILL_WAIT_S)
        if stuck:
            names = ", ".join(f"{r.node_id}/{r.service} (pid {r.pid})" for r in stuck)
            raise LabError(f"still running after SIGKILL: {names}")
        for rec in recs:
            self.state.forget(rec.node_id, rec.service)
        self._save()

    def _save(self) -> None:
        save_state(self.layout.state_path, self.state)
