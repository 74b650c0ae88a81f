"""Open a lab directory as a :class:`~plasmacloud.lab.surface.LabSurface`, whatever its
backend, or as the process or netns :class:`~plasmacloud.lab.control.Lab` a command that
only those have needs: the one place that tells a QEMU lab from a process or netns one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from plasmacloud.lab.backend import LabUsageError
from plasmacloud.lab.layout import LabLayout, default_lab_dir
from plasmacloud.lab.qemu_layout import existing_qemu_lab, qemu_lab_dir
from plasmacloud.lab.state import load_state

if TYPE_CHECKING:
    from plasmacloud.lab.control import Lab
from plasmacloud.lab.surface import LabSurface

BACKENDS = ("process", "netns", "qemu")


def open_any_lab(
    path: Path | None,
    backend: str | None = None,
    scratch: bool = False,
    inside: bool = False,
) -> LabSurface:
    """The lab ``path`` (``--dir``) names, or the default one.

    ``backend``: the one ``plasma lab up --backend`` asks for (a new lab gets it; an
    existing lab of another backend is refused); None: whichever the directory holds.
    ``scratch``: a new process or netns lab picks a random free address range.
    ``inside``: this process already runs where a QEMU lab's addresses exist.
    """
    if backend is not None and backend not in BACKENDS:
        raise LabUsageError(f"backend {backend!r} is not available (have: {', '.join(BACKENDS)})")
    qemu_root = existing_qemu_lab(path)
    if qemu_root is not None or backend == "qemu":
        root = qemu_root or qemu_lab_dir(path)
        if backend not in (None, "qemu"):
            raise _other_backend(root, "qemu", backend)
        if (local := load_state(LabLayout(root).state_path)) is not None:
            raise _other_backend(root, local.backend, "qemu")
        from plasmacloud.lab.qemu_lab import open_qemu_lab

        return open_qemu_lab(root, inside)

    from plasmacloud.lab.local import LocalLab, open_local

    root = path or default_lab_dir()
    lab = open_local(root, backend or "process", scratch)
    if backend is not None and lab.state.backend != backend:
        raise _other_backend(lab.layout.root, lab.state.backend, backend)
    return LocalLab(lab, scratch)


def open_local_lab(path: Path | None, backend: str = "process", scratch: bool = False) -> Lab:
    """The process or netns lab ``path`` names, for what works on its nodes' files on this
    host (a restore, membership changes); a QEMU lab there is refused naming it."""
    from plasmacloud.lab.local import open_local

    if (qemu_root := existing_qemu_lab(path)) is not None:
        raise LabUsageError(
            f"{qemu_root} holds a qemu lab; this command needs a process or netns lab "
            "(it works on the nodes' files on this host)"
        )
    return open_local(path or default_lab_dir(), backend, scratch)


def _other_backend(root: Path, has: str, asked: str) -> LabUsageError:
    return LabUsageError(
        f"{root} holds a {has} lab, not a {asked} one: `plasma lab down --wipe --dir {root}` "
        "first, or use another --dir"
    )
