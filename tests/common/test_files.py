"""write_atomic: whole files with the asked mode, read-only ones replaced."""

from __future__ import annotations

import os
from pathlib import Path

from plasmacloud.common.files import write_atomic


def test_write_atomic_creates_parents_sets_the_mode_and_replaces_read_only_files(
    tmp_path: Path,
) -> None:
    key = tmp_path / "pki" / "node.key"
    write_atomic(key, b"first", 0o400)
    assert key.read_bytes() == b"first" and key.stat().st_mode & 0o777 == 0o400
    inode = key.stat().st_ino
    write_atomic(key, b"second", 0o400)  # 0400: renamed over, never opened for writing
    assert key.read_bytes() == b"second" and key.stat().st_ino != inode
    write_atomic(tmp_path / "hosts", b"x")
    assert (tmp_path / "hosts").stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path / "pki")) == ["node.key"]  # no temporary left


def test_a_stale_temporary_from_a_crash_does_not_stop_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    (tmp_path / ".state.json.tmp").write_bytes(b"half")
    write_atomic(target, b"{}")
    assert target.read_bytes() == b"{}" and not (tmp_path / ".state.json.tmp").exists()
