"""A process or netns lab as a :class:`~plasmacloud.lab.surface.LabSurface`: its nodes are
processes on this machine (in namespaces for netns), so every command runs here.

What only some commands need (FlareDB's probe, validation) is imported by the
method that needs it, so ``plasma lab env`` loads no more than the lab itself."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plasmacloud.cluster.probe import ClusterView, describe
from plasmacloud.cluster.services import FLAREDB
from plasmacloud.lab.backend import LabError, LabUsageError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.env import env_lines
from plasmacloud.lab.grids import health_text, leader_caption, leader_name
from plasmacloud.lab.netns import NetnsBackend, partitions, scratch_netns_spec
from plasmacloud.lab.spec import busy_ports, scratch_spec
from plasmacloud.lab.surface import Grid, LabStatus, Say, refuse

if TYPE_CHECKING:
    from plasmacloud.cluster.target import ClusterTarget
    from plasmacloud.flaredb.probe import FlareNodeView
    from plasmacloud.validate.results import CheckResult

NO_SSH = (
    "its nodes are processes on this machine (`plasma lab logs`, or `ip netns exec` for a "
    "netns node); `plasma lab ssh` needs a qemu lab (`plasma lab up --backend qemu`)"
)


def open_local(root: Path, backend: str = "process", scratch: bool = False) -> Lab:
    """The process or netns lab in ``root``; ``scratch``: a lab not created yet gets a
    random free address range (as the tests' labs do) instead of the fixed default."""
    lab = Lab.open(root, backend=backend)
    if scratch and not lab.layout.state_path.exists():
        spec = scratch_netns_spec() if backend == "netns" else scratch_spec()
        lab = Lab.open(root, spec, backend=backend)
    return lab


def _flaredb_grid(views: list[FlareNodeView]) -> Grid:
    """FlareDB per node: the leader it names, members listed/reachable, applied index."""
    from plasmacloud.flaredb.probe import agreed_leader

    rows = [
        (v.node_id, f"[red]{v.error[:60]}[/red]", "-", "-")
        if v.error
        else (
            v.node_id,
            v.leader or "[red]none[/red]",
            f"{v.members} ({v.reachable})",
            str(v.applied_index),
        )
        for v in views
    ]
    agreed = agreed_leader(views)
    caption = f"leader agreed: {agreed}" if agreed else "[red]no agreed leader[/red]"
    return Grid(
        "FlareDB", ("node", "leader", "members (reachable)", "applied index"), rows, caption
    )


class LocalLab:
    """A :class:`~plasmacloud.lab.control.Lab` behind the common lab surface."""

    default_up_timeout = 60.0
    refused_up_flags: dict[str, str] = {}

    def __init__(self, lab: Lab, scratch: bool = False) -> None:
        self.lab = lab
        self.scratch = scratch

    @property
    def name(self) -> str:
        return self.lab.state.backend

    @property
    def root(self) -> Path:
        return self.lab.layout.root

    @property
    def render_tree(self) -> tuple[Path, Path] | None:
        return None

    def relay(self, argv: list[str], pass_fds: Sequence[int] = ()) -> int | None:
        return None  # the nodes' addresses are routed on this host

    # -- up --------------------------------------------------------------------------------

    def up(self, wipe: bool, say: Say) -> None:
        if wipe:
            self.lab.down(wipe=True)
            self.lab = open_local(self.root, self.name, self.scratch)
        if not self.lab.running() and (busy := busy_ports(self.lab.spec)):
            raise LabError(
                f"addresses already in use: {', '.join(busy)} (another lab? "
                "`plasma lab status --dir ...` or use another --dir)"
            )
        self.lab.up()

    def wait_up(self, timeout: float, on_progress: Callable[[LabStatus], None]) -> LabStatus:
        def show(view: ClusterView) -> None:
            on_progress(self._status(view))

        view = asyncio.run(self.lab.wait_ready(timeout=timeout, on_view=show))
        return self._status(view)

    def failure_logs(self, lines: int = 8) -> list[tuple[Path, str]]:
        tails = []
        for node_id in self.lab.spec.node_ids:
            for svc in self.lab.services:
                path = self.lab.layout.log_path(node_id, svc.name)
                if path.exists():
                    tail = path.read_text(errors="replace").splitlines()[-lines:]
                    tails.append((path, "\n".join(tail)))
        return tails

    def where(self) -> list[Grid | str]:
        lab, layout = self.lab, self.lab.layout
        rows = [("lab dir", str(layout.root))]
        rows.append(("client endpoints", ", ".join(lab.spec.client_endpoints())))
        for cfg in lab.configs():
            urls = [s.health_url(cfg) for s in lab.services]
            rows.append((f"{cfg.node_id} health", ", ".join(urls)))
            logs = [str(layout.log_path(cfg.node_id, s.name)) for s in lab.services]
            rows.append((f"{cfg.node_id} logs", ", ".join(logs)))
            rows.append((f"{cfg.node_id} config", str(layout.config_path(cfg.node_id))))
        if lab.spec.tls:
            rows.append(("CA / operator cert", f"{layout.ca_file}, {layout.operator_cert}"))
        if layout.admin_credentials.exists():
            rows.append(("IAM admin (0600)", str(layout.admin_credentials)))
        rows.append(("use it", 'eval "$(plasma lab env)"; etcdctl member list'))
        return [Grid("where everything is", ("what", "where"), rows, show_header=False)]

    def bootstrap_iam(self, wait: float, warn: Say) -> str:
        # ``wait`` is not needed: wait_ready bootstrapped IAM as soon as Chainfire took it
        from plasmacloud.iam.bootstrap import Outcome

        try:
            outcome = self.lab.iam_bootstrap or asyncio.run(self.lab.bootstrap_iam())
        except Exception as exc:  # gRPC errors share no base class worth naming here
            raise LabError(f"IAM bootstrap failed: {exc}") from exc
        if outcome == Outcome.LOST:
            warn(
                f"IAM was bootstrapped before but {self.lab.layout.admin_credentials} is "
                "gone; `plasma lab up --wipe` starts afresh"
            )
        return ""

    # -- looking at it ---------------------------------------------------------------------

    def _status(self, view: ClusterView) -> LabStatus:
        lab = self.lab
        backend = lab.backend
        rows = []
        nodes = []
        for v in view.nodes:
            procs = backend.node_status(v.node_id).services
            proc_txt = ", ".join(
                f"{p.service} {p.pid}" if p.running else f"{p.service} [red]{p.note}[/red]"
                for p in procs
            )
            members = (v.error and f"[red]{v.error[:60]}[/red]") or str(len(v.members))
            leader = leader_name(view, v.leader_id)
            ip = str(lab.spec.ip_of(v.node_id))
            term = str(v.raft_term or "-")
            rows.append((v.node_id, ip, proc_txt, health_text(v.health, 60), members, leader, term))
            processes = [
                {"service": p.service, "running": p.running, "pid": p.pid, "note": p.note}
                for p in procs
            ]
            nodes.append({"node": v.node_id, "ip": ip, "processes": processes, **v.as_json()})
        columns = ("node", "address", "processes", "health", "members", "leader", "term")
        grid = Grid(f"lab {lab.layout.root}", columns, rows, leader_caption(view))
        doc: dict[str, Any] = {
            "dir": str(lab.layout.root),
            "backend": lab.state.backend,
            "ready": view.ready,
            "leader": view.leader_node,
            "nodes": nodes,
        }
        return LabStatus(view.ready, doc, [grid], "" if view.ready else describe(view))

    def status(self, warn: Say) -> LabStatus:
        from plasmacloud.flaredb.probe import agreed_leader, probe_flaredb

        lab = self.lab
        if not lab.layout.state_path.exists():
            raise LabUsageError(f"no lab in {lab.layout.root}; `plasma lab up` first")
        status = self._status(asyncio.run(lab.probe()))
        if any(s.name == FLAREDB.name for s in lab.services):
            flare = asyncio.run(probe_flaredb(lab.configs(), lab.operator_tls))
            status.doc["flaredb"] = {
                "leader": agreed_leader(flare),
                "nodes": [v.to_json() for v in flare],
            }
            status.grids.append(_flaredb_grid(flare))
        return status

    def env_lines(self, secrets: bool = True) -> list[str]:
        lab = self.lab
        admin = lab.layout.admin_credentials
        return env_lines(lab.configs(), lab.services, lab.operator_tls, admin, self.root, secrets)

    def validate(
        self, wait: float, only: list[str] | None, persistence: bool, on_waiting: Say, warn: Say
    ) -> list[CheckResult]:
        from plasmacloud.validate.checks import checklist, run_checks

        target = self.target()
        if wait > 0:
            try:
                asyncio.run(target.wait_ready(wait))
            except LabError as exc:  # the checklist then says what is wrong
                on_waiting(str(exc))
        checks = checklist(target, persistence)
        if only:
            checks = [c for c in checks if c[0] in only or c[0] == "persistence"]
        return asyncio.run(run_checks(target, checks))

    def target(self) -> ClusterTarget:
        from plasmacloud.lab.target import lab_target

        return lab_target(self.lab)

    def chaos_preflight(self, target: ClusterTarget) -> list[str]:
        return []  # a node this lab runs that is down is one the run starts

    def log_path(self, node_id: str, service: str | None) -> Path:
        self._known(node_id)
        path = self.lab.layout.log_path(node_id, service or "chainfire")
        if not path.exists():
            raise LabUsageError(f"{path} does not exist (services: {self.lab.state.services})")
        return path

    def ssh_argv(self, node_id: str, command: list[str]) -> list[str]:
        raise refuse(self.name, "`plasma lab ssh`", NO_SSH)

    # -- node control ----------------------------------------------------------------------

    def _known(self, *node_ids: str) -> None:
        nodes = self.lab.spec.node_ids
        for node_id in node_ids:
            if node_id not in nodes:
                raise LabUsageError(f"no node {node_id!r} (nodes: {', '.join(nodes)})")

    def start_node(self, node_id: str) -> None:
        self._known(node_id)
        self.lab.prepare()
        self.lab.backend.start_node(node_id)

    def stop_node(self, node_id: str) -> None:
        self._known(node_id)
        self.lab.backend.stop_node(node_id)

    def kill_node(self, node_id: str, sig: signal.Signals) -> None:
        self._known(node_id)
        self.lab.backend.kill_node(node_id, sig)

    def _netns(self) -> NetnsBackend:
        backend = self.lab.backend
        if not isinstance(backend, NetnsBackend):
            raise LabUsageError(
                f"network faults need the netns backend (this lab runs {self.name}); "
                "`plasma lab up --backend netns --dir ...`"
            )
        return backend

    def partition(self, node_id: str, peers: list[str]) -> dict[str, list[str]]:
        backend = self._netns()
        self._known(node_id, *peers)
        backend.partition([node_id], peers)
        return partitions(backend.names, self.lab.spec)

    def heal(self) -> dict[str, list[str]]:
        backend = self._netns()
        backend.heal()
        return partitions(backend.names, self.lab.spec)

    def down(self, wipe: bool) -> str:
        n = len(self.lab.state.processes)
        self.lab.down(wipe=wipe)
        return f"lab {self.root}: stopped {n} process(es){', wiped' if wipe else ''}"
