"""``plasma preflight``: everything that can be checked before a machine is touched.

Each check has a stable id; the catalogue is :data:`CHECKS`. Checks run on the spec, on
the rendered tree (configs, hosts entries, certificates) and, when targets are given,
on facts gathered from the machines (RAM for kexec, kexec, nix, python, disks, ports).
Every failure the seed met has an id here.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from plasmacloud.common.config import ConfigError, NodeConfig, Role
from plasmacloud.provision import certs, nixos_anywhere
from plasmacloud.provision.findings import Finding, error, warning
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.nodeconfig import node_config
from plasmacloud.provision.sample import PLACEHOLDER_SSH_KEY
from plasmacloud.provision.spec import (
    ClusterSpec,
    NodeSpec,
    SpecError,
    SSHTarget,
    consistency_issues,
    load_spec,
)
from plasmacloud.provision.target import FactsSource, TargetFacts

CHECKS = {
    "PF000-spec-invalid": "cluster.yaml does not parse or validate",
    "PF001-cert-missing": "a TLS file named in cluster-config.json does not exist",
    "PF002-cert-wrong-node": "the certificate was issued for another node",
    "PF003-cert-untrusted": "the certificate does not chain to the cluster CA",
    "PF004-cert-san-mismatch": "the certificate lacks the node's hostname/FQDN/IP",
    "PF005-cert-expired": "the certificate has expired",
    "PF006-cert-expiring": "the certificate expires within 30 days",
    "PF007-key-mismatch": "the key is not the certificate's key",
    "PF008-cert-permissions": "keys must be 0400 and certificates 0644",
    "PF009-cert-unreadable": "a certificate or key does not parse",
    "PF010-ca-missing": "no CA in <out>/pki",
    "PF011-config-missing": "a node's cluster-config.json was not rendered",
    "PF012-config-invalid": "a node's cluster-config.json does not validate",
    "PF013-config-stale": "a node's cluster-config.json differs from the spec",
    "PF014-peer-unresolved": "a peer hostname is not in the node's hosts map",
    "PF015-hosts-entry-missing": "configuration.nix lacks a networking.hosts entry for a peer",
    "PF020-duplicate-node-id": "two nodes share a node_id",
    "PF021-duplicate-hostname": "two nodes share a hostname",
    "PF022-duplicate-ip": "two nodes share an IP",
    "PF023-duplicate-mac": "two nodes share a MAC",
    "PF024-ip-outside-network": "a node IP is outside network.cidr",
    "PF025-ip-reserved": "a node IP is the network/broadcast/gateway/netboot address",
    "PF026-gateway-outside-network": "the gateway is outside network.cidr",
    "PF027-no-control-plane": "no control-plane node",
    "PF028-netboot-network": "the netboot server or DHCP pool does not fit the network",
    "PF030-quorum-even": "an even number of Raft voters adds no fault tolerance",
    "PF031-quorum-small": "fewer than 3 Raft voters cannot survive a failure",
    "PF032-bootstrap-none": "no control-plane node bootstraps the cluster",
    "PF033-bootstrap-worker": "a worker is marked bootstrap",
    "PF034-bootstrap-partial": "the bootstrap group is even or smaller than the rest",
    "PF040-port-clash": "a service port collides with a system service port",
    "PF041-port-in-use": "a service port is already listening on the target",
    "PF050-ssh-key-placeholder": "the sample's placeholder SSH key is still in the spec",
    "PF051-flake-untracked": "rendered files are untracked in git; the flake cannot see them",
    "PF060-ssh-unreachable": "the target does not answer over SSH with the key",
    "PF061-ram-low": "too little RAM for nixos-anywhere's kexec installer",
    "PF062-kexec-unavailable": "the target kernel cannot kexec",
    "PF063-nix-missing": "the deploy method needs nix on the target",
    "PF064-disk-missing": "a disk named in the spec is not on the target",
    "PF065-python-missing": "the ssh method needs python3 >= 3.11 and systemd on the target",
    "PF066-disk-not-by-id": "a disk is named by kernel name instead of /dev/disk/by-id",
}

_SPEC_CODES = {
    "duplicate-node-id": "PF020-duplicate-node-id",
    "duplicate-hostname": "PF021-duplicate-hostname",
    "duplicate-ip": "PF022-duplicate-ip",
    "duplicate-mac": "PF023-duplicate-mac",
    "ip-outside-network": "PF024-ip-outside-network",
    "ip-reserved": "PF025-ip-reserved",
    "gateway-outside-network": "PF026-gateway-outside-network",
    "no-control-plane": "PF027-no-control-plane",
    "netboot-network": "PF028-netboot-network",
}
# Ports the node's own system uses; a service there would fail to bind or break boot.
SYSTEM_PORTS = {22: "sshd", 53: "DNS", 67: "DHCP", 68: "DHCP client", 69: "TFTP"}
_NIX_HOSTS_RE = re.compile(r'^\s*"([0-9.]+)"\s*=\s*\[([^\]]*)\];', re.M)


@dataclass
class PreflightRequest:
    """What to check: the spec, optionally the rendered tree and some targets."""

    spec_path: Path
    out: Path | None = None
    targets: dict[str, SSHTarget] = field(default_factory=dict)  # node_id -> target
    facts: FactsSource | None = None


def run(req: PreflightRequest) -> list[Finding]:
    """Run every applicable check; findings are ordered spec, tree, certs, targets."""
    try:
        spec = load_spec(req.spec_path, strict=False)
    except SpecError as exc:
        return [error("PF000-spec-invalid", f"{i.where}: {i.message}", i.fix) for i in exc.issues]
    findings = [
        error(_SPEC_CODES[i.code], f"{i.where}: {i.message}", i.fix)
        for i in consistency_issues(spec)
    ]
    findings += check_quorum(spec) + check_bootstrap(spec) + check_ports(spec)
    if PLACEHOLDER_SSH_KEY in spec.ssh_authorized_keys:
        findings.append(
            warning(
                "PF050-ssh-key-placeholder",
                "ssh_authorized_keys still holds the sample's placeholder key",
                "paste your public key (one line of ~/.ssh/id_ed25519.pub) into the spec",
            )
        )
    if req.out is not None and not req.out.is_dir():
        findings.append(
            error(
                "PF011-config-missing",
                f"{req.out} does not exist: nothing rendered yet",
                f"`plasma render --out {req.out}` then `plasma pki init --out {req.out}`",
            )
        )
    elif req.out is not None:
        out = OutputLayout(req.out)
        findings += check_tree(spec, out)
        findings += certs.check_cluster(spec, out)
        if spec.deploy.method == "nixos-anywhere":
            findings += check_git(out)
    if req.targets:
        if req.facts is None:
            raise ValueError("targets given without a FactsSource")
        for node_id, target in req.targets.items():
            facts = req.facts.gather(target)
            findings += check_target(spec, spec.node(node_id), target, facts)
    return findings


def check_quorum(spec: ClusterSpec) -> list[Finding]:
    """Raft voters: odd and at least 3 for high availability."""
    n = len(spec.control_plane)
    if n == 0:
        return []  # PF027 already says so
    if n < 3:
        return [
            warning(
                "PF031-quorum-small",
                f"{n} control-plane node(s): the cluster stops if any one fails",
                "use 3 (or 5) control-plane nodes for high availability",
            )
        ]
    if n % 2 == 0:
        return [
            warning(
                "PF030-quorum-even",
                f"{n} control-plane nodes tolerate {(n - 1) // 2} failure(s), the same as {n - 1}",
                f"use {n - 1} or {n + 1} control-plane nodes",
            )
        ]
    return []


def check_bootstrap(spec: ClusterSpec) -> list[Finding]:
    """All initial members bootstrap together; later ones join; workers never bootstrap."""
    findings = [
        error(
            "PF033-bootstrap-worker",
            f"{n.node_id} is a worker but has bootstrap: true (workers hold no Raft state)",
            f"set bootstrap: false on {n.node_id}",
            n.node_id,
        )
        for n in spec.nodes
        if n.role == Role.WORKER and n.bootstrap
    ]
    cp = spec.control_plane
    boot = [n for n in cp if n.bootstrap]
    if cp and not boot:
        findings.append(
            error(
                "PF032-bootstrap-none",
                "no control-plane node has bootstrap: true, so nothing forms the cluster "
                "the others try to join",
                "set bootstrap: true on all initial control-plane nodes (the seed used all 3)",
            )
        )
    elif boot and len(boot) < len(cp) and (len(boot) % 2 == 0 or len(boot) * 2 <= len(cp)):
        joiners = ", ".join(n.node_id for n in cp if not n.bootstrap)
        findings.append(
            warning(
                "PF034-bootstrap-partial",
                f"{len(boot)} node(s) bootstrap and {joiners} join: the initial cluster is "
                "even or a minority of the final one",
                "bootstrap an odd majority together (usually all initial nodes), join the rest",
            )
        )
    return findings


def check_ports(spec: ClusterSpec) -> list[Finding]:
    """Service ports must not collide with the node's own system services."""
    return [
        error(
            "PF040-port-clash",
            f"ports.{name} = {port} is the {SYSTEM_PORTS[port]} port",
            f"pick another port for {name}",
        )
        for name, port in spec.ports.model_dump().items()
        if port in SYSTEM_PORTS
    ]


def _nix_hosts(path: Path) -> dict[str, set[str]]:
    """hostname -> IPs from a rendered configuration.nix's networking.hosts."""
    names: dict[str, set[str]] = {}
    for ip, listed in _NIX_HOSTS_RE.findall(path.read_text()):
        for name in re.findall(r'"([^"]+)"', listed):
            names.setdefault(name, set()).add(ip)
    return names


def check_tree(spec: ClusterSpec, out: OutputLayout) -> list[Finding]:
    """Rendered configs exist, match the spec, and every peer resolves on every node."""
    findings: list[Finding] = []
    for node in spec.nodes:
        nid = node.node_id
        path = out.config_path(nid)
        if not path.exists():
            findings.append(
                error(
                    "PF011-config-missing",
                    f"{path} does not exist",
                    "run `plasma render`",
                    nid,
                )
            )
            continue
        try:
            cfg = NodeConfig.load(path)
        except ConfigError as exc:
            findings.append(error("PF012-config-invalid", str(exc), "re-run `plasma render`", nid))
            continue
        if cfg != node_config(spec, node):
            findings.append(
                error(
                    "PF013-config-stale",
                    f"{path} differs from what the spec renders (edited by hand or stale)",
                    "re-run `plasma render` (put lasting changes in cluster.yaml)",
                    nid,
                )
            )
        findings += _check_resolution(cfg, out.node_dir(nid) / "configuration.nix")
    return findings


def _check_resolution(cfg: NodeConfig, nix_path: Path) -> list[Finding]:
    findings: list[Finding] = []
    nix_hosts = _nix_hosts(nix_path) if nix_path.exists() else None
    for peer in cfg.peers:
        if peer.hostname not in cfg.hosts or cfg.hosts[peer.hostname] != peer.ip:
            findings.append(
                error(
                    "PF014-peer-unresolved",
                    f"{cfg.node_id}'s cluster-config.json names peer {peer.hostname} but its "
                    f"hosts map does not resolve it to {peer.ip} (there is no DNS at boot)",
                    f'add "{peer.hostname}": "{peer.ip}" to hosts, or re-run `plasma render`',
                    cfg.node_id,
                )
            )
        if nix_hosts is not None and str(peer.ip) not in nix_hosts.get(peer.hostname, set()):
            findings.append(
                error(
                    "PF015-hosts-entry-missing",
                    f"{nix_path} has no networking.hosts entry {peer.ip} -> {peer.hostname}; "
                    "the node cannot resolve that peer",
                    "re-run `plasma render` (it lists every peer in networking.hosts)",
                    cfg.node_id,
                )
            )
    return findings


def check_git(out: OutputLayout) -> list[Finding]:
    """A flake inside a git work tree only sees tracked files (the seed's 'dirty tree')."""
    try:
        inside = subprocess.run(
            ["git", "-C", str(out.root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return []
        status = subprocess.run(
            # Ignored files are as invisible to a git flake as untracked ones.
            ["git", "-C", str(out.root), "status", "--porcelain", "--ignored", "-uall", "."],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    # Only the Nix files matter to the flake; keys travel separately and stay out of git.
    pending = [ln[3:] for ln in status.stdout.splitlines() if ln.endswith((".nix", "flake.lock"))]
    if not pending:
        return []
    return [
        warning(
            "PF051-flake-untracked",
            f"{len(pending)} rendered file(s) are untracked, ignored or modified in git "
            f"(e.g. {pending[0]}); `nixos-anywhere --flake` will not see them",
            f"git add the .nix files under {out.root} (never the keys) and commit, "
            "or render outside the git tree",
        )
    ]


def check_target(
    spec: ClusterSpec, node: NodeSpec, target: SSHTarget, facts: TargetFacts
) -> list[Finding]:
    """What the deploy method needs from the machine, against gathered facts."""
    nid = node.node_id
    if facts.error:
        return [
            error(
                "PF060-ssh-unreachable",
                f"{target}: {facts.error}",
                "boot the machine into the installer/netboot image with your key, check "
                "the address and port",
                nid,
            )
        ]
    findings: list[Finding] = []
    method = spec.deploy.method
    if method == "nixos-anywhere":
        if facts.mem_mb < nixos_anywhere.KEXEC_MIN_RAM_MB:
            findings.append(
                error(
                    "PF061-ram-low",
                    f"{facts.mem_mb} MB RAM; nixos-anywhere's kexec installer needs "
                    f"{nixos_anywhere.KEXEC_MIN_RAM_MB} MB (swap does not count)",
                    "give the machine more RAM, or use deploy.method: image (netboot)",
                    nid,
                )
            )
        if not facts.kexec_ok and facts.os_id != "nixos":
            findings.append(
                error(
                    "PF062-kexec-unavailable",
                    f"kexec is {'disabled' if facts.kexec_load_disabled == '1' else 'missing'}"
                    " in the target kernel (/proc/sys/kernel/kexec_load_disabled)",
                    "boot the NixOS installer instead, or use deploy.method: image",
                    nid,
                )
            )
    elif method == "ssh":
        if facts.os_id == "nixos" and not facts.nix:
            findings.append(
                error(
                    "PF063-nix-missing",
                    "the target runs NixOS without nix; nix-copy-closure needs nix(-daemon) "
                    "on the target (the seed's blocker)",
                    "use deploy.method: nixos-anywhere (kexec) or boot an image with nix",
                    nid,
                )
            )
        elif facts.os_id != "nixos" and (not facts.systemd or _py(facts.python) < (3, 11)):
            findings.append(
                error(
                    "PF065-python-missing",
                    f"python3 {facts.python or 'missing'}, systemd "
                    f"{'present' if facts.systemd else 'missing'}; the ssh method needs "
                    "python3 >= 3.11 and systemd",
                    "install python3 (Debian 12 / Ubuntu 24.04 ship 3.11+) or use another method",
                    nid,
                )
            )
    for disk in node.disks:
        if not facts.has_disk(disk.path):
            have = ", ".join(sorted(facts.by_id) or facts.block_devices) or "none"
            findings.append(
                error(
                    "PF064-disk-missing",
                    f"{disk.path} is not on the target (it has: {have})",
                    "fix disks[].device / by_id in the spec; wiping a guessed disk is how "
                    "data gets lost",
                    nid,
                )
            )
        elif disk.by_id is None:
            ids = facts.by_id_for(disk.device)
            suggestion = f"by_id: {ids[0]}" if ids else "by_id (see ls -l /dev/disk/by-id)"
            findings.append(
                warning(
                    "PF066-disk-not-by-id",
                    f"{disk.device} is a kernel name; it can point at another disk after a "
                    "reboot or hardware change",
                    f"add {suggestion} to the disk in the spec",
                    nid,
                )
            )
    busy = {name: p for name, p in spec.ports.model_dump().items() if p in facts.listening_ports}
    findings += [
        error(
            "PF041-port-in-use",
            f"port {port} ({name}) is already listening on the target",
            f"stop what listens on {port} or change ports.{name}",
            nid,
        )
        for name, port in busy.items()
    ]
    return findings


def resolve_targets(spec: ClusterSpec, given: list[str], all_nodes: bool) -> dict[str, SSHTarget]:
    """Map ``--target`` values to nodes.

    ``node01=ssh://root@host:22`` names the node; a bare URL matches the node whose
    spec ``ssh`` target or IP it is. ``all_nodes`` adds every node at its spec target.
    """
    targets = {n.node_id: n.target for n in spec.nodes} if all_nodes else {}
    for item in given:
        name, sep, url = item.partition("=")
        if sep and "://" not in name:
            spec.node(name)  # KeyError for an unknown node
            targets[name] = SSHTarget.parse(url)
            continue
        target = SSHTarget.parse(item)
        matches = [
            n.node_id
            for n in spec.nodes
            if n.target == target or (n.ssh is None and str(n.ip) == target.host)
        ]
        if len(matches) != 1:
            raise ValueError(f"{item}: matches no single node; write node01={item}")
        targets[matches[0]] = target
    return targets


def _py(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (0, 0)
