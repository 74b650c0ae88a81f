"""One lab directory as an object: prepare files, run nodes through a backend, wait, wipe.

The CLI, the e2e fixture and the benchmark all drive labs through :class:`Lab`.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from plasmacloud.cluster.probe import ClusterView, describe, probe_cluster
from plasmacloud.cluster.services import runs_iam
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.iam.bootstrap import Outcome, bootstrap_cluster
from plasmacloud.iam.store import StoreUnavailable
from plasmacloud.lab.backend import LabError, NodeBackend
from plasmacloud.lab.layout import OPERATOR_NAME, LabLayout
from plasmacloud.lab.netns import NetnsBackend, NetnsNames, assert_lab_route, netns_spec
from plasmacloud.lab.pki import ensure_lab_pki
from plasmacloud.lab.process import ProcessBackend, is_ours
from plasmacloud.lab.services import SERVICES, ServiceSpec
from plasmacloud.lab.spec import LabSpec
from plasmacloud.lab.state import LabState, load_state, save_state

BACKENDS = ("process", "netns")


@dataclass
class Lab:
    """A lab directory, its saved state, the services its nodes run and its backend."""

    layout: LabLayout
    state: LabState
    services: tuple[ServiceSpec, ...]
    # what the IAM bootstrap found when wait_ready ran it (None: not run yet, or no IAM)
    iam_bootstrap: Outcome | None = field(default=None, init=False)

    @classmethod
    def open(
        cls,
        root: Path,
        spec: LabSpec | None = None,
        services: tuple[ServiceSpec, ...] = SERVICES,
        backend: str = "process",
    ) -> Lab:
        """Load ``root/lab.json`` (or start a new state); ``spec`` replaces a stopped lab's."""
        if backend not in BACKENDS:
            have = ", ".join(BACKENDS)
            raise LabError(f"backend {backend!r} is not available yet (have: {have})")
        layout = LabLayout(root.expanduser().resolve())
        state = load_state(layout.state_path)
        if state is None:
            default = netns_spec() if backend == "netns" else LabSpec()
            state = LabState(spec=spec or default, backend=backend)
        elif spec is not None and spec != state.spec:
            if any(is_ours(p) for p in state.processes):
                raise LabError(
                    f"the lab in {layout.root} is running with other addresses/ports; "
                    "`plasma lab down` it first or use another --dir"
                )
            state.spec = spec
        state.services = [s.name for s in services]
        return cls(layout, state, services)

    @property
    def spec(self) -> LabSpec:
        return self.state.spec

    @property
    def backend(self) -> NodeBackend:
        if self.state.backend == "netns":
            return NetnsBackend(self.layout, self.state, self.services)
        return ProcessBackend(self.layout, self.state, self.services)

    @property
    def operator_tls(self) -> TLSConfig:
        return self.layout.operator_tls(self.spec)

    def configs(self, nodes: list[str] | None = None) -> list[NodeConfig]:
        """Node configs as the lab renders them (every node, or the ones named)."""
        return [self.layout.node_config(self.spec, n) for n in nodes or self.spec.node_ids]

    def prepare(self) -> None:
        """Write certificates (when TLS), node configs and ``lab.json``."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        if self.spec.tls:
            ensure_lab_pki(self.layout, self.spec)
        self.layout.write_configs(self.spec)
        save_state(self.layout.state_path, self.state)

    def running(self) -> bool:
        """True if any process this lab recorded is still alive."""
        return any(is_ours(p) for p in self.state.processes)

    def up(self) -> None:
        """Prepare files and start every node (running ones are left alone)."""
        self.prepare()
        self.backend.up()

    def down(self, wipe: bool = False) -> None:
        """Stop exactly the recorded processes; with ``wipe`` delete data, configs and PKI."""
        # another process (a `plasma lab` or `plasma cluster` command) may have restarted
        # nodes since this object read lab.json: stop what the file records now
        self.state = load_state(self.layout.state_path) or self.state
        self.backend.down()
        if wipe:
            self.wipe()

    def wipe(self) -> None:
        """Delete everything the lab wrote (refused while it runs)."""
        if self.running():
            raise LabError("refusing to wipe a running lab; `plasma lab down` first")
        for node_id in self.spec.node_ids:
            shutil.rmtree(self.layout.node_dir(node_id), ignore_errors=True)
        shutil.rmtree(self.layout.pki_dir, ignore_errors=True)
        self.layout.admin_credentials.unlink(missing_ok=True)  # its cluster is gone
        self.layout.state_path.unlink(missing_ok=True)

    async def probe(self, nodes: list[str] | None = None) -> ClusterView:
        """Health, members and leader as every node (or the ones named) reports them."""
        if self.state.backend == "netns":
            assert_lab_route(NetnsNames.for_lab(self.layout.root), self.spec)
        return await probe_cluster(self.configs(nodes), self.services, self.operator_tls)

    async def wait_ready(
        self,
        timeout: float = 60.0,
        interval: float = 0.3,
        on_view: Callable[[ClusterView], None] | None = None,
        nodes: list[str] | None = None,
    ) -> ClusterView:
        """Poll until the nodes (default all) are healthy and agree on one leader.

        With IAM, its bootstrap runs first (once Chainfire takes it): the probe, like all
        the lab's tooling, calls as the operator's certificate, which names an IAM
        principal only from then on. Raises on timeout, and early when a recorded service
        process exits (naming its log).
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.iam_bootstrap is None and runs_iam(self.services):
                self.iam_bootstrap = await self._try_bootstrap_iam()
            view = await self.probe(nodes)
            if on_view is not None:
                on_view(view)
            if view.ready:
                return view
            self._raise_if_exited()
            if time.monotonic() > deadline:
                raise LabError(f"lab not ready after {timeout:.0f}s: {describe(view)}")
            await asyncio.sleep(interval)

    async def bootstrap_iam(self) -> Outcome | None:
        """Create IAM's first admin once (re-runs change nothing), its credentials 0600 in
        ``<lab>/admin.json``, and make the operator's certificate (CN
        :data:`~plasmacloud.lab.layout.OPERATOR_NAME`) an admin user by policy; ``None``
        if the lab runs no IAM. Needs Chainfire up; writes with node01's certificate,
        which Chainfire lets reach IAM's records without asking IAM."""
        if not runs_iam(self.services):
            return None
        return await bootstrap_cluster(
            self.configs()[0], self.layout.admin_credentials, certificate_admins=(OPERATOR_NAME,)
        )

    async def _try_bootstrap_iam(self) -> Outcome | None:
        """:meth:`bootstrap_iam`, or None while Chainfire cannot take it yet (forming)."""
        try:
            return await self.bootstrap_iam()
        except (StoreUnavailable, grpc.aio.AioRpcError):
            return None

    def _raise_if_exited(self) -> None:
        backend = self.backend
        for node_id in self.spec.node_ids:
            recorded = {p.service for p in self.state.records(node_id)}
            for svc in backend.node_status(node_id).services:
                if svc.service in recorded and not svc.running:
                    log = self.layout.log_path(node_id, svc.service)
                    raise LabError(f"{node_id}/{svc.service} {svc.note}; log: {log}")
