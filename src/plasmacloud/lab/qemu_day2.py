"""Day-2 operations on the QEMU lab, done to its VMs as to real provisioned machines.

* add-node: in two phases, because the VMs' addresses exist only in the lab namespace.
  On the host (:func:`provision_vm`), what ``plasma provision add-node`` does for a new
  machine: cluster.yaml gains the next node (bootstrap false, the MAC and address after
  the last node's), the CA issues its certificate, the tree is rendered again; then dnsmasq
  and the netboot server are restarted with the new spec and the new VM PXE-boots and is
  installed. Inside the namespace (:func:`join_vm`): every running member gets its new
  ``cluster-config.json`` and /etc/hosts over SSH (its services re-read them), then the
  cluster layer's add_node makes it a member of Chainfire and FlareDB (IAM comes with
  Chainfire).
* restore (:func:`restore_vms`, inside the namespace): the per-node commands of a real
  cluster's restore over SSH: every VM's services stop, their data goes, the backup's
  snapshot and IAM records are copied in and laid down with ``plasma chainfire restore``,
  the services start as a new cluster, FlareDB's database is loaded back.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from plasmacloud.cluster.backup import load_flaredb, verify_backup
from plasmacloud.cluster.membership import Change, Progress, add_node
from plasmacloud.cluster.probe import wait_cluster_ready
from plasmacloud.common.config import NodeConfig
from plasmacloud.lab.qemu import QemuBackend, vm_ssh_options
from plasmacloud.lab.qemu_target import QEMU_RECOVER_S, qemu_target
from plasmacloud.lab.restore import Restored
from plasmacloud.lab.ssh import run_remote
from plasmacloud.provision.agent import managed_hosts
from plasmacloud.provision.bundle import make_bundle
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.members import add_node as provision_add_node
from plasmacloud.provision.nix import CONFIG_FILE
from plasmacloud.provision.spec import SSHTarget, load_spec

INSTALL_TIMEOUT_S = 900.0  # one VM's PXE boot and install on a loaded host
# where a restore's files wait on a VM for `plasma chainfire restore` (tmpfs: the
# installer runs from RAM)
RESTORE_DIR = "/tmp/plasma-restore"


def next_mac(mac: str) -> str:
    """The MAC after ``mac`` (the lab's nodes are numbered in its last octets)."""
    value = int(mac.replace(":", ""), 16) + 1
    return ":".join(f"{value:012x}"[i : i + 2] for i in range(0, 12, 2))


def vm_run(
    backend: QemuBackend, cfg: NodeConfig, remote: str, data: bytes = b"", timeout: float = 300
) -> str:
    """Run the shell command ``remote`` on the node's VM as root over SSH, ``data`` on
    its stdin (from inside the lab namespace); its stdout, LabError if it fails."""
    options, target = vm_ssh_options(backend), SSHTarget(host=str(cfg.ip))
    return run_remote(options, target, remote, cfg.node_id, data=data, timeout=timeout)


def _install(path: str, mode: int) -> str:
    """A shell command that replaces ``path`` by its stdin, atomically, with ``mode``."""
    new = shlex.quote(f"{path}.new")
    return f"umask 077 && cat > {new} && chmod {mode:o} {new} && mv {new} {shlex.quote(path)}"


def push_member_files(backend: QemuBackend, cfg: NodeConfig) -> None:
    """A running member's share of what add-node rendered, shipped as the runbook's step 2
    has an operator do it: its ``cluster-config.json`` (the new peer in it; the services
    re-read it) and the /etc/hosts block naming every node. From the host's rendered tree:
    the netboot server hands out a node's bundle (its private key) only while it installs,
    so a joined member's agent cannot fetch it again."""
    spec = load_spec(backend.paths.spec)
    bundle = make_bundle(spec, OutputLayout(backend.paths.out), spec.node(cfg.node_id))
    config = next(f for f in bundle.files if f.path == str(CONFIG_FILE))
    # /etc/nixos is the installed system's (/mnt), bound where the services read it
    vm_run(backend, cfg, _install(config.path, config.mode), config.content)
    hosts = managed_hosts(vm_run(backend, cfg, "cat /mnt/etc/hosts"), bundle)
    vm_run(backend, cfg, f"{_install('/mnt/etc/hosts', 0o644)} && cp /mnt/etc/hosts /etc/hosts",
           hosts.encode())  # fmt: skip


def provision_vm(backend: QemuBackend, progress: Progress, timeout: float) -> str:
    """The host's half of add-node: the next node into cluster.yaml and its files
    (``plasma provision add-node``'s code), the lab's provisioning services restarted
    with it, its VM PXE-booted until installed. Returns the node's id."""
    spec = load_spec(backend.paths.spec)
    last = spec.nodes[-1]
    node_id = f"node{len(spec.nodes) + 1:02d}"
    mac, ip = next_mac(last.mac), IPv4Address(int(last.ip) + 1)
    progress(f"provision add-node {node_id} --mac {mac} --ip {ip} (bootstrap: false)")
    change = provision_add_node(backend.paths.spec, backend.paths.out, node_id, mac, ip)
    for finding in change.findings:
        progress(f"preflight {finding.severity.value}: {finding.message}")
    progress("restarting dnsmasq and the netboot server with the new cluster.yaml")
    backend.reload_spec()
    progress(f"powering {node_id} on: PXE boot, install")
    started = time.monotonic()
    backend.start_node(node_id)
    backend.wait_installed(node_id, timeout)
    progress(f"{node_id} installed in {time.monotonic() - started:.0f} s")
    return node_id


async def join_vm(backend: QemuBackend, node_id: str, progress: Progress) -> Change:
    """The namespace's half of add-node: the members' files refreshed by their agent, then
    ``node_id`` (installed, running with bootstrap false) added to every service."""
    target = qemu_target(backend)
    members = [c for c in target.configs if c.node_id != node_id]
    names = ", ".join(c.node_id for c in members)
    progress(f"{names}: the new cluster-config.json and /etc/hosts shipped over SSH")
    await asyncio.gather(*(asyncio.to_thread(push_member_files, backend, c) for c in members))
    change = await add_node(target, node_id, progress, start=False, ready_timeout=QEMU_RECOVER_S)
    await asyncio.to_thread(backend.mark_joined, target.node_ids, f"added {node_id}")
    return change


async def restore_vms(
    backend: QemuBackend, backup: Path, ready_timeout: float, progress: Progress
) -> Restored:
    """Replace the VMs' cluster state with ``backup``'s (checked before anything stops);
    the VMs must be up, only their services are stopped and started."""
    manifest = verify_backup(backup)
    target = qemu_target(backend)
    control = target.control
    assert control is not None  # the qemu target always drives its services over SSH
    files = (manifest.chainfire.file, manifest.iam.file)
    blobs = {name: (backup / name).read_bytes() for name in files}
    snapshot, records = (f"{RESTORE_DIR}/{name}" for name in files)
    argv = ["plasma", "chainfire", "restore", snapshot, "--config", str(CONFIG_FILE)]
    restore = shlex.join([*argv, "--system-records", records])

    def lay_down(cfg: NodeConfig) -> None:
        """One VM, its services stopped: data emptied, the backup's files copied in and
        laid down as a real node's operator does."""
        data = " ".join(shlex.quote(str(cfg.data_path(s.name))) for s in target.services)
        vm_run(backend, cfg, f"rm -rf {data} {RESTORE_DIR} && mkdir -m 700 {RESTORE_DIR}")
        for name, blob in blobs.items():
            vm_run(backend, cfg, f"cat > {shlex.quote(f'{RESTORE_DIR}/{name}')}", blob)
        vm_run(backend, cfg, f"{restore} && rm -rf {RESTORE_DIR}")

    async def each(step: Callable[[NodeConfig], None]) -> None:
        # every VM at once: each step costs tens of seconds on an emulated CPU
        await asyncio.gather(*(asyncio.to_thread(step, c) for c in target.configs))

    started = time.monotonic()
    progress("stopping every VM's services")
    await each(lambda c: control.stop_node(c.node_id))
    revision = manifest.chainfire.detail["revision"]
    progress(f"every VM: plasma chainfire restore (revision {revision})")
    await each(lay_down)
    progress("starting every VM's services as a new cluster")
    await each(lambda c: control.start_node(c.node_id))
    await wait_cluster_ready(
        target.configs, target.services, target.tls, ready_timeout, "after the restore"
    )
    if target.runs("flaredb"):
        progress("loading FlareDB's database")
        database = (backup / manifest.flaredb.file).read_bytes()
        await asyncio.to_thread(load_flaredb, target.configs[0].peers, target.tls, database)
    return Restored(manifest, time.monotonic() - started)
