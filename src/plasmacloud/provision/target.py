"""What a target machine has (RAM, kexec, nix, python, disks, listening ports).

Facts come from one small POSIX shell script run on the machine
(templates/target-facts.sh.j2). Where it runs is behind :class:`FactsSource`: over SSH
for real machines, locally, or from recorded facts in tests, so preflight's target
checks are tested without any SSH.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Protocol

from plasmacloud.provision.spec import SSHTarget
from plasmacloud.provision.templating import render_template


@dataclass
class TargetFacts:
    """Facts about one machine; ``error`` set means it could not be reached."""

    error: str | None = None
    mem_mb: int = 0
    os_id: str = "unknown"
    kexec_load_disabled: str = "missing"  # "0" = kexec usable, "1" = disabled
    nix: str = ""
    python: str = ""
    systemd: bool = False
    by_id: dict[str, str] = field(default_factory=dict)  # by-id link -> /dev/<name>
    block_devices: list[str] = field(default_factory=list)
    listening_ports: set[int] = field(default_factory=set)

    @property
    def kexec_ok(self) -> bool:
        return self.kexec_load_disabled == "0"

    def has_disk(self, path: str) -> bool:
        """True when ``path`` (a /dev/<name> or a by-id link) exists on the machine."""
        return path in self.by_id or path in self.block_devices

    def by_id_for(self, device: str) -> list[str]:
        """by-id links that point at ``device`` (suggestions for the spec)."""
        return sorted(link for link, dev in self.by_id.items() if dev == device)


def parse_facts(text: str) -> TargetFacts:
    """Parse the gather script's ``key=value`` output."""
    facts = TargetFacts()
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        if key == "mem_kb" and value.isdigit():
            facts.mem_mb = int(value) // 1024
        elif key == "os_id":
            facts.os_id = value or "unknown"
        elif key == "kexec_load_disabled":
            facts.kexec_load_disabled = value
        elif key == "nix":
            facts.nix = value
        elif key == "python":
            facts.python = value
        elif key == "systemd":
            facts.systemd = value == "yes"
        elif key == "by_id":
            link, _, dev = value.partition("=")
            facts.by_id[link] = dev
        elif key == "block":
            facts.block_devices.append(value)
        elif key == "listen":
            port = value.rpartition(":")[2]
            if port.isdigit():
                facts.listening_ports.add(int(port))
    return facts


class FactsSource(Protocol):
    """Gathers :class:`TargetFacts` for a target."""

    def gather(self, target: SSHTarget) -> TargetFacts: ...


@dataclass(frozen=True)
class ShellFacts:
    """Runs the gather script through ``argv`` (+ the target for SSH) and parses it."""

    timeout: float = 30.0
    identity: str | None = None
    local: bool = False  # run on this machine (used to test the script itself)

    def argv(self, target: SSHTarget) -> list[str]:
        if self.local:
            return ["sh", "-s"]
        argv = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-p",
            str(target.port),
        ]
        if self.identity:
            argv += ["-i", self.identity]
        return [*argv, f"{target.user}@{target.host}", "sh", "-s"]

    def gather(self, target: SSHTarget) -> TargetFacts:
        try:
            proc = subprocess.run(
                self.argv(target),
                input=render_template("target-facts.sh.j2"),
                capture_output=True,
                text=True,
                timeout=self.timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return TargetFacts(error=f"{target}: {exc}")
        if proc.returncode != 0:
            detail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            return TargetFacts(error=f"{target}: {detail[0]}")
        return parse_facts(proc.stdout)
