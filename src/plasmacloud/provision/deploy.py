"""Deploy drivers (Ironic-style): one interface, three ways to put a node's system on it.

- ``nixos-anywhere``: kexec into an installer over SSH, disko partitions, the rendered
  flake is installed; secrets travel with ``--extra-files`` (modes kept).
- ``image``: netboot + first-boot agent (``plasma netboot serve``; the agent installs).
- ``ssh``: a machine already running Debian/Ubuntu gets the PlasmaCloud package, its
  secrets and systemd units over SSH.

Every driver validates the target with the same facts preflight uses, prints its exact
commands (``--dry-run``) and runs them through a :class:`~plasmacloud.provision.disk.Runner`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from plasmacloud.provision import nixos_anywhere
from plasmacloud.provision.disk import Runner
from plasmacloud.provision.findings import Finding
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.nix import CONFIG_FILE, SERVICES
from plasmacloud.provision.pki import CERT_MODE, KEY_MODE
from plasmacloud.provision.preflight import check_target
from plasmacloud.provision.spec import SECRETS_DIR, ClusterSpec, NodeSpec
from plasmacloud.provision.target import FactsSource, TargetFacts
from plasmacloud.provision.templating import render_template

VENV = Path("/opt/plasmacloud")


class DeployError(RuntimeError):
    """A deploy step failed; the message names the node and the command."""


class Driver(Protocol):
    """What every deploy method provides."""

    @property
    def name(self) -> str:
        """The method name in the spec."""
        ...

    def validate(self, spec: ClusterSpec, node: NodeSpec, facts: TargetFacts) -> list[Finding]:
        """Preflight of the target for this method."""
        ...

    def stage(self, out: OutputLayout, node: NodeSpec) -> Path:
        """Build the root-relative tree of files the node receives; returns its root."""
        ...

    def commands(self, spec: ClusterSpec, out: OutputLayout, node: NodeSpec) -> list[list[str]]:
        """The exact commands that deploy ``node`` (after :meth:`stage`)."""
        ...


def stage_secrets(out: OutputLayout, node: NodeSpec) -> Path:
    """Copy the node's secrets into a root-relative tree with their final modes.

    Returns the staging root (holding ``etc/nixos/secrets/...``); it is rebuilt on every
    call so a removed or renamed file never lingers.
    """
    stage = nixos_anywhere.staging_dir(out, node)
    if stage.exists():
        shutil.rmtree(stage)
    dest = stage / SECRETS_DIR.relative_to("/")
    dest.mkdir(parents=True)
    os.chmod(stage, 0o700)  # the stage holds a private key
    for src in sorted(out.secrets_dir(node.node_id).iterdir()):
        if src.is_file() and not src.name.startswith("."):
            shutil.copyfile(src, dest / src.name)
            os.chmod(dest / src.name, KEY_MODE if src.suffix == ".key" else CERT_MODE)
    return stage


def _ssh(node: NodeSpec, *remote: str) -> list[str]:
    t = node.target
    return ["ssh", "-o", "BatchMode=yes", "-p", str(t.port), f"{t.user}@{t.host}", *remote]


@dataclass(frozen=True)
class NixosAnywhereDriver:
    name: str = "nixos-anywhere"

    def validate(self, spec: ClusterSpec, node: NodeSpec, facts: TargetFacts) -> list[Finding]:
        return check_target(_with_method(spec, self.name), node, node.target, facts)

    def stage(self, out: OutputLayout, node: NodeSpec) -> Path:
        return stage_secrets(out, node)

    def commands(self, spec: ClusterSpec, out: OutputLayout, node: NodeSpec) -> list[list[str]]:
        return [nixos_anywhere.command(spec, out, node)]


@dataclass(frozen=True)
class ImageDriver:
    """Nothing to push: the node netboots and its agent pulls. Commands power-cycle it
    into PXE when the spec says how; otherwise the operator boots it."""

    name: str = "image"

    def validate(self, spec: ClusterSpec, node: NodeSpec, facts: TargetFacts) -> list[Finding]:
        return check_target(_with_method(spec, self.name), node, node.target, facts)

    def stage(self, out: OutputLayout, node: NodeSpec) -> Path:
        return stage_secrets(out, node)

    def commands(self, spec: ClusterSpec, out: OutputLayout, node: NodeSpec) -> list[list[str]]:
        return []


@dataclass(frozen=True)
class SSHDriver:
    """Debian/Ubuntu over SSH: venv + package, secrets (tar keeps modes), systemd units."""

    package: Path | None = None  # a wheel or sdist of plasmacloud to install
    name: str = "ssh"

    def validate(self, spec: ClusterSpec, node: NodeSpec, facts: TargetFacts) -> list[Finding]:
        return check_target(_with_method(spec, self.name), node, node.target, facts)

    def stage(self, out: OutputLayout, node: NodeSpec) -> Path:
        """Secrets plus the systemd units, so one tar stream carries both."""
        stage = stage_secrets(out, node)
        units = stage / "etc" / "systemd" / "system"
        units.mkdir(parents=True)
        for name, cmd in SERVICES:
            (units / f"plasmacloud-{name}.service").write_text(systemd_unit(name, cmd))
        return stage

    def commands(self, spec: ClusterSpec, out: OutputLayout, node: NodeSpec) -> list[list[str]]:
        if self.package is None:
            raise DeployError("the ssh method needs --package (a plasmacloud wheel or sdist)")
        stage = nixos_anywhere.staging_dir(out, node)
        t = node.target
        remote_pkg = f"/tmp/{self.package.name}"
        units = [f"plasmacloud-{name}" for name, _ in SERVICES]
        untar = shlex.join(_ssh(node, "tar", "-C", "/", "--no-same-owner", "-xpf", "-"))
        return [
            [
                "scp",
                "-o",
                "BatchMode=yes",
                "-P",
                str(t.port),
                str(self.package),
                f"{t.user}@{t.host}:{remote_pkg}",
            ],
            ["sh", "-c", f"tar -C {shlex.quote(str(stage))} -cf - etc | {untar}"],
            _ssh(node, f"python3 -m venv {VENV} && {VENV}/bin/pip install --quiet {remote_pkg}"),
            _ssh(node, "systemctl", "daemon-reload"),
            _ssh(node, "systemctl", "enable", "--now", *units),
        ]


def systemd_unit(service: str, command: str) -> str:
    """The systemd unit running one PlasmaCloud service (ssh method;
    templates/systemd-unit.service.j2)."""
    return render_template(
        "systemd-unit.service.j2",
        service=service,
        command=command,
        venv=VENV,
        config_file=CONFIG_FILE,
    )


def _with_method(spec: ClusterSpec, method: str) -> ClusterSpec:
    deploy = spec.deploy.model_copy(update={"method": method})
    return spec.model_copy(update={"deploy": deploy})


def driver(method: str, package: Path | None = None) -> Driver:
    """The driver for a deploy method name."""
    if method == "nixos-anywhere":
        return NixosAnywhereDriver()
    if method == "image":
        return ImageDriver()
    if method == "ssh":
        return SSHDriver(package=package)
    raise DeployError(f"unknown deploy method {method!r}; use nixos-anywhere, image or ssh")


def stream_command(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str]:
    """Run a long deploy command with its output on the terminal (bounded: 2 hours)."""
    try:
        return subprocess.run(list(argv), input=stdin, text=True, timeout=7200).returncode, ""
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)


def print_only(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str]:
    """The ``--dry-run`` runner: runs nothing, so :func:`deploy_node` stages the node's
    files and lists the commands it would run."""
    return 0, ""


def target_findings(
    drv: Driver, spec: ClusterSpec, nodes: list[NodeSpec], facts: FactsSource
) -> list[Finding]:
    """What ``drv`` finds wrong with each node's machine, from facts gathered now (a
    deploy never starts on an error among them)."""
    return [f for n in nodes for f in drv.validate(spec, n, facts.gather(n.target))]


def deploy_node(
    drv: Driver, spec: ClusterSpec, out: OutputLayout, node: NodeSpec, run: Runner
) -> list[str]:
    """Stage the node's files and run the driver's commands; returns them as lines."""
    drv.stage(out, node)
    done = []
    for argv in drv.commands(spec, out, node):
        code, output = run(argv)
        if code != 0:
            raise DeployError(f"{node.node_id}: `{shlex.join(argv)}` failed: {output.strip()}")
        done.append(shlex.join(argv))
    return done
