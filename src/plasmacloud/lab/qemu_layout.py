"""Where the QEMU lab lives and what its VMs get by default.

Kept free of the backend's imports (stdlib only) so ``plasma lab`` can tell a QEMU lab
from a process one, and show these defaults in its help, without loading the backend.
"""

from __future__ import annotations

from pathlib import Path

from plasmacloud.lab.layout import default_lab_dir

STATE_FILE = "qemu-lab.json"
# The initramfs unpacks into a tmpfs capped at half the RAM: ~200 MB of image needs
# more than 512 MB (the unpack then fails part-way, "No space left on device").
DEFAULT_MEMORY_MB = 768


def qemu_lab_dir(path: Path | None) -> Path:
    """The QEMU lab's directory: ``path`` (``--dir``) or beside the default process lab."""
    return (path or default_lab_dir().with_name("lab-qemu")).expanduser().resolve()


def existing_qemu_lab(path: Path | None) -> Path | None:
    """The QEMU lab a ``plasma lab`` command means, or None if it means a process lab.

    With a directory (``--dir`` / ``$PLASMA_LAB_DIR``): that directory, if its state file
    is a QEMU lab's. Without one: the default QEMU lab, when there is no process lab in
    the default place but ``plasma lab up --backend qemu`` left a lab in its own.
    """
    from plasmacloud.lab.state import load_state  # pydantic: only once a command runs

    if path is not None:
        root = path.expanduser().resolve()
        return root if (root / STATE_FILE).exists() else None
    if load_state(default_lab_dir() / "lab.json") is not None:
        return None
    root = qemu_lab_dir(None)
    return root if (root / STATE_FILE).exists() else None
