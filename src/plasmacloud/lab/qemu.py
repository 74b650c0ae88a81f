"""The ``qemu`` lab backend: real VMs that PXE-boot from our netboot server.

``up`` builds (or reuses) the install image, writes the lab's cluster spec, renders it and
issues its certificates, creates the lab network (:mod:`plasmacloud.lab.qemu_net`) and
powers on one VM per node. Each VM boots QEMU's iPXE ROM on the lab NIC (``-boot n``),
gets its pinned address and the chain script from dnsmasq, fetches its per-MAC script,
kernel and initrd from ``plasma netboot serve`` and runs the first-boot agent, which
reports its progress to the server (read back here from the server's state file).

Per node: ``<lab>/node0X/disk.raw`` (sparse), ``serial.log`` (console), ``qmp.sock``
(power control), and SSH forwarded from 127.0.0.1:2201.. through a second, user-mode
NIC (``restrict=on``: the guest can reach nothing through it, the host reaches its port
22). TCG unless a probe boot under KVM reaches userspace (this machine's paravirtual
``/dev/kvm`` hangs a stock kernel).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel, ConfigDict, Field

from plasmacloud.cluster.control import NodeStatus, ServiceProcess
from plasmacloud.cluster.services import SERVICES, Service, service_named
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.common.files import write_atomic, write_model
from plasmacloud.iam.bootstrap import Outcome, bootstrap_cluster
from plasmacloud.iam.endpoints import iam_urls
from plasmacloud.lab import qemu_net
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.qemu_layout import DEFAULT_MEMORY_MB, STATE_FILE
from plasmacloud.lab.qemu_proc import Proc, spawn, wait_for
from plasmacloud.lab.services import plasma_executable
from plasmacloud.lab.ssh import SSHOptions
from plasmacloud.provision import certs, pki
from plasmacloud.provision.agent import post_report
from plasmacloud.provision.certs import ADMIN_CLIENT
from plasmacloud.provision.image import Image, build_image
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.render import render
from plasmacloud.provision.sample import sample_spec
from plasmacloud.provision.spec import ClusterSpec, load_spec
from plasmacloud.provision.states import NodeStatus as ProvisionStatus
from plasmacloud.provision.states import State, StateFile, load_states, now_iso

SSH_BASE_PORT = 2200  # node0N -> 127.0.0.1:220N, like the seed
DISK_SIZE = 4 * 1024**3  # sparse: costs only what the agent writes
# Unknown machines get an address from this pool, so they reach the refusal script.
UNKNOWN_POOL = ("192.168.100.200", "192.168.100.220")
# Raft timing of the lab's cluster: one emulated CPU per VM running three Python services
# stalls event loops for hundreds of ms, and the engine's 0.3-0.6 s elections then churn.
TCG_RAFT = {"heartbeat_ms": 200, "election_timeout_ms": [1500, 3000]}
KVM_PROBE_FILE = "kvm-probe.json"


# A node is installed once the agent says so, and stays installed when the lab later
# records it as joined (a member of the formed cluster).
INSTALLED = frozenset({State.INSTALLED, State.JOINED})


class VmRecord(BaseModel):
    """A running VM."""

    model_config = ConfigDict(extra="forbid")

    node_id: str
    mac: str
    proc: Proc
    ssh_port: int | None


class QemuState(BaseModel):
    """``qemu-lab.json``: what this lab created, so ``down`` removes exactly that."""

    model_config = ConfigDict(extra="forbid")

    namespace: str
    tap: str
    accel: str = "tcg"
    memory_mb: int = DEFAULT_MEMORY_MB
    image_key: str | None = None
    # services the installed VMs start (names from lab.services)
    services: list[str] = Field(default_factory=lambda: [s.name for s in SERVICES])
    infra: list[Proc] = Field(default_factory=list)
    vms: list[VmRecord] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    # SSH forwarded from 127.0.0.1:220N (tests' labs go without: fixed ports would clash
    # with a user's lab); kept so a VM started later (add-node) gets the same
    ssh_forwards: bool = True


@dataclass(frozen=True)
class QemuPaths:
    """Where one QEMU lab keeps its files."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def spec(self) -> Path:
        return self.root / "cluster.yaml"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def ssh_key(self) -> Path:
        return self.root / "ssh" / "id_ed25519"

    @property
    def vde(self) -> Path:
        return self.root / "vde"

    @property
    def dnsmasq(self) -> Path:
        return self.root / "dnsmasq"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def node(self, node_id: str) -> Path:
        return self.root / node_id

    def serial(self, node_id: str) -> Path:
        return self.node(node_id) / "serial.log"

    def qmp(self, node_id: str) -> Path:
        return self.node(node_id) / "qmp.sock"

    def disk(self, node_id: str) -> Path:
        return self.node(node_id) / "disk.raw"

    @property
    def admin(self) -> Path:
        """IAM's bootstrap admin (0600), written by :func:`bootstrap_iam`."""
        return self.root / "admin.json"

    @property
    def client_tls(self) -> TLSConfig:
        """The operator's client certificate (``plasma pki``'s admin) and the lab CA."""
        clients = OutputLayout(self.out).clients_dir
        return TLSConfig(
            ca_file=clients / "ca.crt",
            cert_file=clients / "admin.crt",
            key_file=clients / "admin.key",
        )


# -- preparation ----------------------------------------------------------------------------


def ensure_ssh_key(path: Path) -> str:
    """The lab's SSH key pair (created once, private key 0600); returns the public line."""
    pub = path.with_suffix(".pub")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        pub.write_text(public.decode() + " plasma-qemu-lab\n")
    return pub.read_text().strip()


def lab_spec_text(public_key: str, tap: str) -> str:
    """The seed's 3-node sample, netbooted by image on the lab tap, with a pool for
    unknown machines (so they are refused by script instead of ignored)."""
    data: dict[str, Any] = yaml.safe_load(sample_spec(public_key))
    data["netboot"]["interface"] = tap
    data["netboot"]["dhcp_range"] = list(UNKNOWN_POOL)
    data["deploy"]["method"] = "image"
    data["raft"] = dict(TCG_RAFT)
    for node in data["nodes"]:
        node.pop("ssh", None)
        node["disks"][0]["root_size"] = "3G"
    return "# PlasmaCloud QEMU lab (generated by plasma lab up --backend qemu)\n" + yaml.safe_dump(
        data, sort_keys=False
    )


def prepare_tree(paths: QemuPaths, tap: str) -> ClusterSpec:
    """Spec, rendered tree and certificates of the lab (kept if already there)."""
    public_key = ensure_ssh_key(paths.ssh_key)
    if not paths.spec.exists():
        paths.spec.write_text(lab_spec_text(public_key, tap))
    spec = load_spec(paths.spec)
    render(spec, paths.out, paths.spec.read_text())
    layout = OutputLayout(paths.out)
    pki.init_ca(layout.pki_dir, f"PlasmaCloud CA ({spec.name})")
    certs.issue_cluster(spec, layout)
    return spec


def stage_image(image: Image, images: Path, services: list[str], configs: list[NodeConfig]) -> None:
    """Point ``<lab>/images`` at the built kernel and initrd, with the lab's extra
    kernel arguments: DHCP on the management NIC too (so SSH forwards work) and the
    services to start once installed (the lab's, as in the process backend).

    With IAM (and TLS) each node gets its own ``<images>/<node>/cmdline``: the IAM URLs
    its Chainfire and FlareDB verify tokens with, its own first, and the operator's
    certificate name to let through, as :func:`~plasmacloud.lab.services.with_auth`
    starts them in the process lab.
    """
    images.mkdir(parents=True, exist_ok=True)
    for name, src in (("kernel", image.kernel), ("initrd", image.initrd)):
        link = images / name
        link.unlink(missing_ok=True)
        link.symlink_to(src)
    stage_cmdlines(images, services, configs)


def stage_cmdlines(images: Path, services: list[str], configs: list[NodeConfig]) -> None:
    """The kernel arguments :func:`stage_image` describes (again after a node is added)."""
    args = f"plasmacloud.mgmt_dhcp=1 plasmacloud.services={','.join(services)} quiet"
    (images / "cmdline").write_text(args + "\n")
    for cfg in configs:
        per_node = images / cfg.node_id / "cmdline"
        if "iam" in services and cfg.tls.enabled:
            urls = ",".join(iam_urls(cfg))
            auth = f"plasmacloud.iam_urls={urls}"
            per_node.parent.mkdir(exist_ok=True)
            per_node.write_text(f"{args} {auth}\n")
        else:
            per_node.unlink(missing_ok=True)


# -- QEMU ---------------------------------------------------------------------------------


def qemu_argv(
    paths: QemuPaths,
    node_id: str,
    mac: str,
    accel: str,
    memory_mb: int,
    ssh_port: int | None,
) -> list[str]:
    """The command line of one lab VM (PXE first on the lab NIC, then its disk)."""
    argv = [
        "qemu-system-x86_64",
        "-name",
        node_id,
        "-machine",
        f"q35,accel={accel}",
        "-smp",
        "1",
        "-m",
        str(memory_mb),
        "-display",
        "none",
        "-chardev",
        f"file,id=serial,path={paths.serial(node_id)},append=on",
        "-serial",
        "chardev:serial",
        "-qmp",
        f"unix:{paths.qmp(node_id)},server=on,wait=off",
        "-netdev",
        f"vde,id=lab,sock={paths.vde / 'switch'}",
        "-device",
        f"virtio-net-pci,netdev=lab,mac={mac},bootindex=1",
        "-drive",
        f"file={paths.disk(node_id)},if=none,id=disk,format=raw",
        "-device",
        "virtio-blk-pci,drive=disk,bootindex=2",
    ]
    if ssh_port is not None:
        argv += [
            "-netdev",
            f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            # romfile= : no PXE ROM on this NIC, it must never boot from it
            "-device",
            "virtio-net-pci,netdev=mgmt,romfile=",
        ]
    return argv


def qmp(sock: Path, command: str, timeout: float = 5.0) -> dict[str, Any]:
    """Run one QMP command (``quit``, ``system_reset``, ``query-status``...)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        f = s.makefile("rw")
        json.loads(f.readline())  # greeting
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}) + "\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    return {}  # QEMU closed the socket (``quit``)
                reply = json.loads(line)
                if "return" in reply or "error" in reply:
                    break
        if "error" in reply:
            raise LabError(f"QMP {command}: {reply['error']}")
        return dict(reply)


def kvm_host_id() -> str:
    """What a KVM probe's answer depends on besides the image: the host and its kernel."""
    u = os.uname()
    return f"{u.nodename} {u.release} {u.version} {u.machine}"


def kernel_digest(image: Image) -> str:
    """What else a KVM probe's answer depends on: the kernel, not the Python in the initrd."""
    return hashlib.sha256(image.kernel.read_bytes()).hexdigest()


def cached_kvm_boots(image: Image, timeout: float = 20.0) -> bool:
    """:func:`kvm_boots`, remembered in the image cache for this host and kernel (a
    failing probe costs its whole ``timeout``, ~10% of a cold start; keyed by the kernel,
    not the image, so a new build of the package's sources does not probe again)."""
    record = image.directory.parent / KVM_PROBE_FILE
    seen_key = {"host": kvm_host_id(), "kernel": kernel_digest(image)}
    with contextlib.suppress(OSError, ValueError):
        seen = json.loads(record.read_text())
        if {k: seen.get(k) for k in seen_key} == seen_key and isinstance(seen.get("kvm"), bool):
            return bool(seen["kvm"])
    ok = kvm_boots(image, timeout)
    with contextlib.suppress(OSError):  # a read-only cache only costs the next probe
        write_atomic(record, (json.dumps({**seen_key, "kvm": ok}) + "\n").encode())
    return ok


def kvm_boots(image: Image, timeout: float = 20.0) -> bool:
    """Probe: does the image reach userspace under KVM? (False without /dev/kvm, and on
    this machine's paravirtual KVM, which hangs a stock kernel.)"""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    argv = [
        "qemu-system-x86_64",
        "-machine",
        "q35,accel=kvm",
        "-m",
        "256",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        "console=ttyS0 plasmacloud.probe=1",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return b"plasmacloud-init: userspace" in (exc.stdout or b"")
    return b"plasmacloud-init: userspace" in done.stdout


def vm_ssh_options(lab: QemuBackend) -> SSHOptions:
    """SSH into the lab's VMs: the lab's key; host keys unchecked (the installer makes a
    new one on every boot, and the VMs are reachable only through the lab)."""
    return SSHOptions(Path("/dev/null"), lab.paths.ssh_key, check_host_keys=False)


# -- the backend ----------------------------------------------------------------------------


class QemuBackend:
    """Lab nodes as PXE-booted QEMU VMs (implements :class:`NodeBackend`)."""

    name = "qemu"

    def __init__(
        self,
        root: Path,
        nodes: list[str] | None = None,
        memory_mb: int = DEFAULT_MEMORY_MB,
        image_cache: Path | None = None,
        ssh: bool | None = None,
        services: list[str] | None = None,
    ) -> None:
        self.paths = QemuPaths(root)
        self.names = qemu_net.NetNames.for_lab(root)
        self.image_cache = image_cache
        self.only = nodes
        self.state = self._load() or QemuState(
            namespace=self.names.namespace, tap=self.names.tap, memory_mb=memory_mb
        )
        if services is not None:
            self.state.services = [service_named(n).name for n in services]
        if ssh is not None:
            self.state.ssh_forwards = ssh

    # -- lifecycle -------------------------------------------------------------------------

    def up(self) -> None:
        """Image, tree, network, then power on every node (or those named at init)."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        image = build_image(self.image_cache)
        self.state.timings["image_s"] = round(time.monotonic() - t0, 1)
        if self.state.image_key != image.key:
            self.state.accel = "kvm" if cached_kvm_boots(image) else "tcg"
            self.state.image_key = image.key
        spec = prepare_tree(self.paths, self.names.tap)
        configs = [
            NodeConfig.load(OutputLayout(self.paths.out).config_path(n.node_id)) for n in spec.nodes
        ]
        stage_image(image, self.paths.images, self.state.services, configs)
        self._network_up(spec)
        self._save()
        for node_id in self.only or [n.node_id for n in spec.nodes]:
            self.start_node(node_id)

    def _network_up(self, spec: ClusterSpec) -> None:
        if all(self._infra(role) for role in ("switch", "dnsmasq", "netboot")):
            return
        self._network_down()
        try:
            qemu_net.create_namespace(self.names)
            prefix = spec.network.cidr.prefixlen
            server = f"{spec.netboot.server_ip}/{prefix}"
            self.state.infra.append(
                qemu_net.start_switch(self.names, self.paths.vde, self.paths.log("switch"), server)
            )
            self._save()
            self._start_provisioning(spec)
        except Exception:
            self._network_down()
            raise

    def _start_provisioning(self, spec: ClusterSpec) -> None:
        """dnsmasq and the netboot server for ``spec``; returns once both serve."""
        log = self.paths.log("netboot")
        # a restarted server appends to its log: only what it writes now counts
        seen = log.stat().st_size if log.exists() else 0
        self.state.infra.append(
            qemu_net.start_dnsmasq(spec, self.names, self.paths.dnsmasq, self.paths.log("dnsmasq"))
        )
        self._save()
        self.state.infra.append(
            qemu_net.start_netboot(
                self.names,
                plasma_executable(),
                self.paths.spec,
                self.paths.out,
                self.paths.images,
                str(spec.netboot.server_ip),
                spec.netboot.http_port,
                log,
            )
        )
        self._save()
        wait_for(lambda: self._netboot_listening(log, seen), 60, "netboot server")
        time.sleep(0.5)  # dnsmasq fails (bad config, busy port) right after start
        self._check_network()

    def reload_spec(self) -> None:
        """After cluster.yaml changed (a node added): the per-node kernel arguments
        staged again, dnsmasq and the netboot server restarted with the new spec (both
        read it once, as an operator's would), so the new machine gets its pinned address
        and bundle. The provisioning states are kept (the server's file)."""
        spec = load_spec(self.paths.spec)
        layout = OutputLayout(self.paths.out)
        configs = [NodeConfig.load(layout.config_path(n.node_id)) for n in spec.nodes]
        stage_cmdlines(self.paths.images, self.state.services, configs)
        for role in ("netboot", "dnsmasq"):
            proc = next((p for p in self.state.infra if p.role == role), None)
            if proc is not None:
                proc.stop()
                self.state.infra.remove(proc)
        self._save()
        self._start_provisioning(spec)

    def _netboot_listening(self, log: Path, offset: int) -> bool:
        self._check_network()
        with log.open("rb") as f:
            f.seek(offset)
            return b"serving" in f.read()

    def _check_network(self) -> None:
        """LabError naming the log of any lab network process that has exited."""
        for role in ("switch", "dnsmasq", "netboot"):
            if self._infra(role) is None:
                raise LabError(f"lab {role} is not running; see {self.paths.log(role)}")

    def start_node(self, node_id: str) -> None:
        """Power the node on: a fresh PXE boot (its disk is kept)."""
        spec = load_spec(self.paths.spec)
        node = spec.node(node_id)
        if (vm := self._vm(node_id)) is not None and vm.proc.alive():
            return
        self.state.vms = [v for v in self.state.vms if v.node_id != node_id]
        self.boot(node_id, node.mac)

    def boot(self, node_id: str, mac: str) -> VmRecord:
        """Start a VM with ``mac`` on the lab network (also for machines not in the
        spec: that is how the refusal path is exercised)."""
        d = self.paths.node(node_id)
        d.mkdir(parents=True, exist_ok=True)
        disk = self.paths.disk(node_id)
        if not disk.exists():
            with disk.open("wb") as f:
                f.truncate(DISK_SIZE)
        self.paths.qmp(node_id).unlink(missing_ok=True)
        port = None
        if self.state.ssh_forwards and node_id[-2:].isdigit():
            port = SSH_BASE_PORT + int(node_id[-2:])
        argv = qemu_argv(self.paths, node_id, mac, self.state.accel, self.state.memory_mb, port)
        vm = VmRecord(
            node_id=node_id,
            mac=mac,
            proc=spawn(f"vm:{node_id}", argv, d / "qemu.log"),
            ssh_port=port,
        )
        self.state.vms.append(vm)
        self._save()
        return vm

    def stop_node(self, node_id: str) -> None:
        """Power off. The installer has no ACPI daemon, so this is QMP ``quit`` (the
        disk is flushed by QEMU), then SIGTERM/SIGKILL if QEMU does not go."""
        vm = self._vm(node_id)
        if vm is None:
            return
        if vm.proc.alive():
            with contextlib.suppress(OSError, LabError, ValueError):  # then signals
                qmp(self.paths.qmp(node_id), "quit")
            try:
                wait_for(lambda: not vm.proc.alive(), 10, f"{node_id} power off")
            except TimeoutError:
                vm.proc.stop()
        self.state.vms.remove(vm)
        self._save()

    def kill_node(self, node_id: str, sig: Any = None) -> None:
        """Cut the power: SIGKILL the VM's QEMU (no flush, like pulling the plug)."""
        vm = self._vm(node_id)
        if vm is None:
            return
        vm.proc.stop(grace=0)
        self.state.vms.remove(vm)
        self._save()

    def reset_node(self, node_id: str) -> None:
        """Hard reset (the reset button): the VM PXE-boots again."""
        qmp(self.paths.qmp(node_id), "system_reset")

    def cut_power(self, node_id: str) -> None:
        """Power failure, for chaos: the VM stops dead (QMP ``stop``: no shutdown, no
        flush, silent on the network) until :meth:`restore_power`, which resets it, so
        its memory is lost and only what reached the disk remains, as after a real one.
        (Killing QEMU would do the same but need QEMU started again, from the host's
        network namespace for the SSH forward; a chaos run works inside the lab's.)"""
        qmp(self.paths.qmp(node_id), "stop")

    def restore_power(self, node_id: str) -> None:
        """Power back after :meth:`cut_power`: reset, run; the VM PXE-boots and the agent
        brings the node back from its disk. Nothing happens to a VM that runs."""
        sock = self.paths.qmp(node_id)
        if qmp(sock, "query-status")["return"].get("running", True):
            return
        qmp(sock, "system_reset")
        qmp(sock, "cont")

    def node_status(self, node_id: str) -> NodeStatus:
        vm = self._vm(node_id)
        prov = self.provisioning().nodes.get(node_id)
        note = f"provisioning: {prov.state}" if prov else "not in the spec"
        if vm is None:
            return NodeStatus(node_id, [ServiceProcess("vm", False, None, f"off; {note}")])
        running = vm.proc.alive()
        return NodeStatus(
            node_id,
            [ServiceProcess("vm", running, vm.proc.pid, note if running else "exited")],
        )

    def provisioning(self) -> StateFile:
        """Every node's provisioning state as the netboot server last saved it."""
        from plasmacloud.provision.netboot import state_path

        return load_states(state_path(OutputLayout(self.paths.out)))

    def reboot(self, node_ids: list[str], timeout: float) -> None:
        """Hard-reset the nodes all at once (nothing survives in any VM's memory), then
        wait until each has PXE-booted and been installed again from its kept disk."""
        since = now_iso()
        for node_id in node_ids:
            self.reset_node(node_id)
        for node_id in node_ids:
            self.wait_installed(node_id, timeout, booted_since=since)

    def wait_installed(
        self, node_id: str, timeout: float, booted_since: str | None = None
    ) -> ProvisionStatus:
        """Block until ``node_id`` is installed (or joined already; LabError on ``failed``
        or timeout, naming the last step and where the serial console is).
        ``booted_since`` (an ISO time as the netboot server writes them): only a state
        reached after a boot that started then counts, so an earlier boot's ``installed``
        is not taken for this one."""
        deadline = time.monotonic() + timeout
        status = seen = None
        while time.monotonic() < deadline:
            status = seen = self.provisioning().nodes.get(node_id)
            if seen is not None and booted_since is not None:
                again = any(e.state == State.BOOTING and e.at >= booted_since for e in seen.events)
                status = seen if again else None
            if status is not None and status.state in INSTALLED:
                return status
            if status is not None and status.state == State.FAILED:
                break
            self._check_network()
            vm = self._vm(node_id)
            if vm is None or not vm.proc.alive():
                raise LabError(f"{node_id}: VM is not running; see {self.paths.node(node_id)}")
            time.sleep(0.5)
        where = f"serial console: {self.paths.serial(node_id)}"
        if status is not None and status.state == State.FAILED:
            raise LabError(f"{node_id} failed at {status.last_step}: {status.error}; {where}")
        last = seen.state if seen else "unknown"
        reset = " (after the reset)" if booted_since else ""
        raise LabError(f"{node_id} is {last}, not installed{reset}, after {timeout:.0f} s; {where}")

    def mark_joined(self, node_ids: list[str], note: str) -> None:
        """Report to the netboot server that these nodes, installed, are now members of
        the formed cluster (state ``joined``), as the agent reports its own steps. The
        server listens on the lab network: call this from inside the lab namespace."""
        spec = load_spec(self.paths.spec)
        server = f"http://{spec.netboot.server_ip}:{spec.netboot.http_port}"
        states = self.provisioning().nodes
        for node_id in node_ids:
            status = states.get(node_id)
            if status is None or status.state != State.INSTALLED:
                continue  # not installed (yet), or already joined
            mac = spec.node(node_id).mac
            try:
                post_report(server, node_id, mac, "join", "ok", State.JOINED, note)
            except OSError as exc:
                why = f"{node_id}: the netboot server did not take 'joined': {exc}"
                raise LabError(why) from exc

    def validation_target(self) -> tuple[list[NodeConfig], TLSConfig, tuple[Service, ...]]:
        """Node configs as rendered, the operator's client TLS (the admin cert
        ``plasma pki`` issued) and the services the VMs run: what validating from inside
        the lab namespace needs."""
        layout = OutputLayout(self.paths.out)
        nodes = self.only or [n.node_id for n in load_spec(self.paths.spec).nodes]
        configs = [NodeConfig.load(layout.config_path(n)) for n in nodes]
        tls = self.paths.client_tls.model_copy(update={"enabled": configs[0].tls.enabled})
        return configs, tls, tuple(service_named(n) for n in self.state.services)

    def runs_iam(self) -> bool:
        """True if the VMs run IAM (then auth is on and the lab bootstraps an admin)."""
        return "iam" in self.state.services

    async def bootstrap_iam(self) -> Outcome:
        """Create IAM's first admin once (re-runs change nothing), credentials 0600 in
        ``<lab>/admin.json``; the operator's certificate (CN ``admin``, the admin user
        itself) is thus an admin by policy. Talks to the VMs' Chainfire with the first
        node's certificate (IAM's state is in the system keyspace, which only members
        reach), so it must run inside the lab namespace (``plasma lab qemu validate``
        does)."""
        configs, _operator, _services = self.validation_target()
        node = OutputLayout(self.paths.out).local_config(configs[0])
        return await bootstrap_cluster(
            node,
            self.paths.admin,
            certificate_admins=(ADMIN_CLIENT,),
        )

    def in_namespace(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the lab namespace: the only place 192.168.100.0/24 exists."""
        return qemu_net.in_namespace(self.names.namespace, argv)

    def down(self) -> None:
        """Stop every VM and the network, remove the namespace, verify nothing is left."""
        # what the state file records now: other commands (add-node restarts dnsmasq and
        # the netboot server, powers a new VM on) may have changed it since this opened
        self.state = self._load() or self.state
        for vm in list(self.state.vms):
            self.kill_node(vm.node_id)
        self._network_down()
        left = qemu_net.leftovers(self.names)
        if left:
            raise LabError(f"still present after down: {', '.join(left)}")

    def wipe(self) -> None:
        """Delete what the lab wrote: disks, consoles, rendered tree and PKI, admin, state
        (refused while a VM or the network runs)."""
        if any(v.proc.alive() for v in self.state.vms) or any(p.alive() for p in self.state.infra):
            raise LabError("refusing to wipe a running lab; `plasma lab down` first")
        nodes = {v.node_id for v in self.state.vms}
        if self.paths.spec.exists():
            nodes |= {n.node_id for n in load_spec(self.paths.spec).nodes}
        p = self.paths
        for d in [*(p.node(n) for n in nodes), p.out, p.images, p.vde, p.dnsmasq, p.root / "logs"]:
            shutil.rmtree(d, ignore_errors=True)
        for f in (p.admin, p.spec, p.state):
            f.unlink(missing_ok=True)

    def _network_down(self) -> None:
        for proc in reversed(self.state.infra):
            proc.stop()
        self.state.infra = []
        qemu_net.delete_namespace(self.names)
        self._save()

    # -- helpers -----------------------------------------------------------------------------

    def _vm(self, node_id: str) -> VmRecord | None:
        return next((v for v in self.state.vms if v.node_id == node_id), None)

    def _infra(self, role: str) -> Proc | None:
        proc = next((p for p in self.state.infra if p.role == role), None)
        return proc if proc is not None and proc.alive() else None

    def _load(self) -> QemuState | None:
        if not self.paths.state.exists():
            return None
        return QemuState.model_validate_json(self.paths.state.read_text())

    def _save(self) -> None:
        write_model(self.paths.state, self.state)
