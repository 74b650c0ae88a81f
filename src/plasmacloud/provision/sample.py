"""The commented sample ``cluster.yaml`` that ``plasma init`` writes: the seed's cluster."""

from __future__ import annotations

from pathlib import Path

# A syntactically valid key that opens nothing; preflight warns while it is still there.
PLACEHOLDER_SSH_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA "
    "replace-me@plasmacloud"
)

_SAMPLE = """\
# PlasmaCloud cluster spec. Every generated file comes from this one:
#   plasma render   -> per-node cluster-config.json, configuration.nix, disko.nix, ...
#   plasma pki init -> CA + per-node certificates named as the configs expect
#   plasma preflight -> checks all of it before anything touches a machine
# This sample is a 3-node control plane on 192.168.100.0/24 (a lab network).

name: plasmacloud            # cluster name (lowercase, digits, '-')
domain: lab.local            # optional; adds FQDNs (node01.lab.local) to hosts and certs

network:
  cidr: 192.168.100.0/24     # the nodes' network
  gateway: 192.168.100.1
  dns: [192.168.100.1]
  interface: enp0s2          # NIC name on the nodes (QEMU virtio: enp0s2)

# Public keys allowed to log in as root on every node (one line of ~/.ssh/id_*.pub).
ssh_authorized_keys:
  - {ssh_key}

# Service ports, the same on every node (these are the defaults).
ports:
  chainfire_client: 2379
  chainfire_peer: 2380
  chainfire_metrics: 2381
  flaredb_http: 4001
  flaredb_raft: 4002
  iam_http: 8443

# Chainfire's automatic history compaction (etcd's --auto-compaction-mode/-retention):
# periodic keeps a duration of history (1h, 30m), revision keeps a number of revisions;
# retention "0" turns it off. Without it the database grows until the space alarm.
chainfire:
  auto_compaction:
    mode: periodic
    retention: 1h

# The provisioning host on the nodes' network (`plasma netboot serve`).
netboot:
  server_ip: 192.168.100.1
  http_port: 8080
  interface: br-plasma       # only this interface gets DHCP/TFTP
  dhcp: full                 # full = we are the DHCP server; proxy = beside an existing one

deploy:
  method: nixos-anywhere     # nixos-anywhere | image (netboot + agent) | ssh (existing Linux)
  nixos_release: "25.11"

# One entry per machine. bootstrap: true on all initial members forms the Raft clusters
# together; nodes added later use bootstrap: false and join.
# Prefer disks[].by_id (ls -l /dev/disk/by-id): /dev/sdX names can change between boots.
nodes:
{nodes}"""

_NODE = """\
  - node_id: node0{i}
    hostname: node0{i}
    mac: "52:54:00:00:01:0{i}"
    ip: 192.168.100.1{i}
    role: control-plane
    bootstrap: true
    ssh: ssh://root@127.0.0.1:220{i}   # the lab forwards SSH; omit for root@<ip>:22
    disks:
      - device: /dev/vda
        root_size: 80G       # LVM root; the rest of the disk is the data volume
"""


def sample_spec(ssh_key: str = PLACEHOLDER_SSH_KEY) -> str:
    """The sample ``cluster.yaml`` text with ``ssh_key`` as the authorized key."""
    return _SAMPLE.format(ssh_key=ssh_key, nodes="".join(_NODE.format(i=i) for i in (1, 2, 3)))


def default_ssh_key() -> str:
    """The operator's first public key from ~/.ssh, else the placeholder."""
    for name in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
        p = Path.home() / ".ssh" / name
        if p.is_file():
            line = p.read_text().strip().splitlines()
            if line:
                return line[0]
    return PLACEHOLDER_SSH_KEY
