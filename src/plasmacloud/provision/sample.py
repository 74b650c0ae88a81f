"""The commented sample ``cluster.yaml`` that ``plasma init`` writes: the seed's cluster."""

from __future__ import annotations

from pathlib import Path

from plasmacloud.provision.templating import render_template

# A syntactically valid key that opens nothing; preflight warns while it is still there.
PLACEHOLDER_SSH_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA "
    "replace-me@plasmacloud"
)


def sample_spec(ssh_key: str = PLACEHOLDER_SSH_KEY) -> str:
    """The sample ``cluster.yaml`` text (templates/cluster.yaml.j2) with ``ssh_key`` as
    the authorized key."""
    return render_template("cluster.yaml.j2", ssh_key=ssh_key, node_numbers=(1, 2, 3))


def default_ssh_key() -> str:
    """The operator's first public key from ~/.ssh, else the placeholder."""
    for name in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
        p = Path.home() / ".ssh" / name
        if p.is_file():
            line = p.read_text().strip().splitlines()
            if line:
                return line[0]
    return PLACEHOLDER_SSH_KEY
