"""What every ``plasma lab`` command asks of a lab directory, whatever runs its nodes.

:func:`plasmacloud.lab.opener.open_lab` opens a directory as one :class:`LabSurface`: the
process and netns backends (:mod:`plasmacloud.lab.local`) and the QEMU VMs
(:mod:`plasmacloud.lab.qemu_lab`) answer the same calls, so the CLI makes one call per
command. An operation or flag a backend cannot honour raises :class:`LabUsageError`
naming the backend and what to do instead.

Reports are data (:class:`Grid`, :class:`LabStatus`): the CLI renders them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from plasmacloud.lab.backend import LabUsageError

if TYPE_CHECKING:
    from plasmacloud.cluster.target import ClusterTarget
    from plasmacloud.validate.results import CheckResult

Say = Callable[[str], None]


def refuse(backend: str, what: str, why: str) -> LabUsageError:
    """The error for ``what`` (a flag, a command) that the ``backend`` lab cannot do."""
    return LabUsageError(f"{what} with --backend {backend}: {why}")


@dataclass(frozen=True)
class Grid:
    """A table as data, rendered by the CLI; cells may carry console markup (``[red]``)."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    caption: str = ""
    show_header: bool = True


@dataclass(frozen=True)
class LabStatus:
    """The lab as one look saw it: tables for people, a document for ``--json``."""

    ready: bool
    doc: dict[str, Any]
    grids: list[Grid]
    # said under the tables: what a cluster still forming waits for ("" once ready)
    waiting: str = ""


class LabSurface(Protocol):
    """One lab directory and the backend that runs its nodes."""

    @property
    def name(self) -> str:
        """The backend: "process", "netns" or "qemu"."""
        ...

    @property
    def root(self) -> Path:
        """The lab directory."""
        ...

    @property
    def default_up_timeout(self) -> float:
        """Seconds `plasma lab up` waits for the lab when --timeout is not given."""
        ...

    @property
    def refused_up_flags(self) -> Mapping[str, str]:
        """Flags of `plasma lab up` this backend refuses, with why (it honours the rest)."""
        ...

    @property
    def render_tree(self) -> tuple[Path, Path] | None:
        """The spec and render tree its nodes were provisioned from (the QEMU lab's
        ``cluster.yaml`` and ``out/``: the netboot server's states, the certificates);
        None for nodes this host runs from the lab's own files."""
        ...

    def relay(self, argv: list[str], pass_fds: Sequence[int] = ()) -> int | None:
        """Run ``plasma ARGV`` where the cluster's addresses exist, if that is not this
        process; its exit code, or None when this process reaches them itself. LabError
        if that place does not exist (the lab is not up). ``pass_fds``: open files the
        command inherits (a socket bound here keeps listening here)."""
        ...

    def up(self, wipe: bool, say: Say) -> None:
        """Prepare the lab's files and start every node (``wipe``: from scratch)."""
        ...

    def wait_up(self, timeout: float, on_progress: Callable[[LabStatus], None]) -> LabStatus:
        """Follow the nodes coming up until they are; LabError after ``timeout`` s."""
        ...

    def failure_logs(self) -> list[tuple[Path, str]]:
        """The end of each log worth reading after a failed start."""
        ...

    def where(self) -> list[Grid | str]:
        """Where everything is, said once the lab is up."""
        ...

    def bootstrap_iam(self, wait: float, warn: Say) -> str:
        """Create IAM's first admin once (idempotent); what to say ("" for nothing).
        LabError if the cluster could not take it within ``wait`` s."""
        ...

    def status(self, warn: Say) -> LabStatus:
        """Nodes, services, members and leader as they are now."""
        ...

    def env_lines(self, secrets: bool = True) -> list[str]:
        """Shell exports for clients of the lab (``secrets``: IAM's admin password too)."""
        ...

    def validate(
        self, wait: float, only: list[str] | None, persistence: bool, on_waiting: Say, warn: Say
    ) -> list[CheckResult]:
        """The checklist, repeated for up to ``wait`` s until green; ``only``: these ids."""
        ...

    def target(self) -> ClusterTarget:
        """The running cluster as validation and chaos work on it."""
        ...

    def chaos_preflight(self, target: ClusterTarget) -> list[str]:
        """What stops a chaos run before it starts (nodes that do not answer...)."""
        ...

    def log_path(self, node_id: str, service: str | None) -> Path:
        """The log ``plasma lab logs`` shows (``service``: None for the default)."""
        ...

    def ssh_argv(self, node_id: str, command: list[str]) -> list[str]:
        """The ``ssh`` command line into the node."""
        ...

    def start_node(self, node_id: str) -> None:
        """Start one node (after stop or kill)."""
        ...

    def stop_node(self, node_id: str) -> None:
        """Stop one node gracefully."""
        ...

    def kill_node(self, node_id: str, sig: signal.Signals) -> None:
        """Send ``sig`` to one node (SIGKILL: a crash)."""
        ...

    def partition(self, node_id: str, peers: list[str]) -> dict[str, list[str]]:
        """Cut the node off from ``peers``; every node's unreachable peers after."""
        ...

    def heal(self) -> dict[str, list[str]]:
        """Restore every link; every node's unreachable peers after (none)."""
        ...

    def down(self, wipe: bool) -> str:
        """Stop everything the lab started (``wipe``: delete what it wrote); what was done."""
        ...
