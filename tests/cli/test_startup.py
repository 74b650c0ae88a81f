"""``plasma --help`` stays thin: the command modules import their subsystems inside the
commands, so asking for help loads none of them (issue 14 item 5). Structural, not
timed: a fresh interpreter is asked which modules it loaded (bench/cli_startup.py has
the timings)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Whatever is loaded at start must be among these; a subsystem, its third-party
# dependencies (grpc, cryptography, pydantic, aiohttp, yaml) or asyncio are not.
ALLOWED = {
    "plasmacloud",
    "plasmacloud.cluster",
    "plasmacloud.cluster.control",
    "plasmacloud.cluster.services",
    "plasmacloud.common",
    "plasmacloud.common.durations",
    "plasmacloud.common.errors",
    "plasmacloud.iam",
    "plasmacloud.iam.endpoints",
    "plasmacloud.lab",
    "plasmacloud.lab.backend",
    "plasmacloud.lab.layout",
    "plasmacloud.lab.qemu_layout",
}
HEAVY = ("grpc", "cryptography", "pydantic", "aiohttp", "yaml", "jinja2", "asyncio")
GROUPS = ["chainfire", "cluster", "flaredb", "iam", "lab", "pki", "netboot", "provision"]


def _loaded_after(argvs: list[list[str]]) -> tuple[list[str], list[int]]:
    """Modules loaded by a fresh interpreter that imports plasmacloud.cli and runs each
    argv through the app (help exits are caught); and their exit codes."""
    script = f"""
import json, sys
from plasmacloud.cli import app
codes = []
for argv in {argvs!r}:
    try:
        app(argv, prog_name="plasma")
    except SystemExit as exc:
        codes.append(exc.code or 0)
print(json.dumps([sorted(sys.modules), codes]))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    modules, codes = json.loads(proc.stdout.splitlines()[-1])
    return modules, codes


def _problems(modules: list[str]) -> list[str]:
    ours = [m for m in modules if m.startswith("plasmacloud") and m.split(".")[1:2] != ["cli"]]
    heavy = [m for m in modules if m.split(".")[0] in HEAVY]
    return sorted(set(ours) - ALLOWED) + heavy


def test_importing_the_cli_loads_no_subsystem() -> None:
    modules, _codes = _loaded_after([])
    assert "plasmacloud.cli.lab_qemu" in modules  # every command module is imported
    assert _problems(modules) == []


@pytest.mark.parametrize("argv", [["--help"], *([g, "--help"] for g in GROUPS)])
def test_help_loads_no_subsystem(argv: list[str]) -> None:
    modules, codes = _loaded_after([argv])
    assert codes == [0]
    assert _problems(modules) == []


def test_a_command_still_loads_what_it_needs() -> None:
    """The other side: running a command imports its subsystem (here `lab status` on a
    directory holding no lab, which opens the lab before saying so)."""
    modules, codes = _loaded_after([["lab", "status", "--dir", "/nonexistent/plasma-lab"]])
    assert codes != [0]
    assert "plasmacloud.lab.control" in modules
