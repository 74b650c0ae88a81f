"""nixos-anywhere command lines for each node (used by the runbook and ``plasma deploy``)."""

from __future__ import annotations

import shlex
from pathlib import Path

from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.spec import SECRETS_DIR, ClusterSpec, NodeSpec

# kexec boots an installer into RAM; below this nixos-anywhere dies out of memory
# (its users' top complaint). Swap does not help: the new kernel has none.
KEXEC_MIN_RAM_MB = 2560


def staging_dir(out: OutputLayout, node: NodeSpec) -> Path:
    """Root-relative tree handed to ``--extra-files`` (holds etc/nixos/secrets/...)."""
    return out.root / ".stage" / node.node_id


def flake_ref(root: Path) -> str:
    """A path flake reference (a bare ``out`` would be looked up in the flake registry)."""
    text = str(root)
    return text if root.is_absolute() or text.startswith(".") else f"./{text}"


def command(spec: ClusterSpec, out: OutputLayout, node: NodeSpec) -> list[str]:
    """The exact nixos-anywhere argv that installs ``node`` from the rendered flake."""
    target = node.target
    return [
        "nixos-anywhere",
        "--flake",
        f"{flake_ref(out.root)}#{node.node_id}",
        "--extra-files",
        str(staging_dir(out, node)),
        "--chown",
        str(SECRETS_DIR),
        "0:0",
        # Detected kernel modules/firmware for this machine, imported by configuration.nix.
        "--generate-hardware-config",
        "nixos-generate-config",
        str(out.node_dir(node.node_id) / "hardware-configuration.nix"),
        "--ssh-port",
        str(target.port),
        f"{target.user}@{target.host}",
    ]


def command_line(spec: ClusterSpec, out: OutputLayout, node: NodeSpec) -> str:
    """:func:`command` as one shell-quoted line."""
    return shlex.join(command(spec, out, node))
