"""``RUNBOOK.md``: the exact steps for this cluster, commands included.

Paths are relative to the output directory (the runbook says to ``cd`` there), so the
file is the same wherever the tree is rendered.
"""

from __future__ import annotations

from pathlib import Path

from plasmacloud.provision import nixos_anywhere
from plasmacloud.provision.ipxe import base_url, script_name
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.spec import SECRETS_DIR, ClusterSpec
from plasmacloud.provision.templating import render_template


def runbook(spec: ClusterSpec) -> str:
    """The cluster's runbook in Markdown (templates/runbook.md.j2)."""
    here = OutputLayout(Path("."))
    commands = (
        [nixos_anywhere.command_line(spec, here, n) for n in spec.nodes]
        if spec.deploy.method == "nixos-anywhere"
        else []
    )
    return render_template(
        "runbook.md.j2",
        spec=spec,
        cp=spec.control_plane,
        secrets_dir=SECRETS_DIR,
        kexec_min_ram_mb=nixos_anywhere.KEXEC_MIN_RAM_MB,
        nixos_anywhere_commands=commands,
        base_url=base_url(spec),
        script_name=script_name,
    )
