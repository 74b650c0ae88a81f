"""What the QEMU lab's VM tests share: a lab that is always torn down, and the CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from plasmacloud.lab.qemu import QemuBackend, prepare_tree
from plasmacloud.lab.services import plasma_executable


@contextmanager
def qemu_lab(root: Path) -> Iterator[QemuBackend]:
    """A QEMU lab in ``root`` running Chainfire, FlareDB and IAM, without the fixed host
    SSH ports (tests must not collide with a lab of the user's); down whatever happens."""
    backend = QemuBackend(root, ssh=False)
    try:
        yield backend
    finally:
        backend.down()


def prepared_qemu_lab(root: Path) -> QemuBackend:
    """A qemu lab directory as `lab up` leaves it (spec, tree, PKI, state), no VM."""
    backend = QemuBackend(root, ssh=False)
    backend.paths.root.mkdir(parents=True)
    prepare_tree(backend.paths, backend.names.tap)
    backend._save()
    return backend


def plasma(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run the ``plasma`` CLI; its result with stdout and stderr captured."""
    argv = [plasma_executable(), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
