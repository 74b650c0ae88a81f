"""Files written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` with ``mode`` so that a reader (or a crash) sees the old
    file or the new one, never half of one: a hidden temporary beside it, created 0600
    (a key is never readable in between), flushed to disk, then renamed over ``path``
    (which also replaces a read-only 0400 file instead of reopening it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_model(path: Path, model: BaseModel) -> None:
    """A state/record file: ``model`` as indented JSON, written with :func:`write_atomic`."""
    write_atomic(path, (model.model_dump_json(indent=2) + "\n").encode())
