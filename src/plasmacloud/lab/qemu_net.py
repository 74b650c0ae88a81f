"""The QEMU lab's network: a namespace holding a VDE switch's tap, dnsmasq and the netboot
HTTP server; the VMs plug into the switch through its UNIX socket.

::

    host netns                     | lab netns plasma-q<hash> (created here)
    qemu node01 --vde socket--+    |   tap plq<hash> 192.168.100.1/24 (+ fd00:5c::1/64 for RA)
    qemu node02 --vde socket--+--- vde_switch -t tap (runs inside the namespace)
    qemu node03 --vde socket--+    |   dnsmasq: DHCP only on that tap, pinned MACs, iPXE chain
                                   |   plasma netboot serve on 192.168.100.1:8080

Network safety: 192.168.100.0/24 exists only inside the namespace. The host gets no
route to it and no interface in it; dnsmasq serves only the tap (``bind-interfaces``);
nothing is bridged to a real interface. Filesystem UNIX sockets do not belong to a
network namespace, which is what lets QEMU in the host namespace reach the switch.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from plasmacloud.lab.qemu_proc import Proc, spawn, wait_for
from plasmacloud.provision.dnsmasq import DnsmasqOptions, dnsmasq_conf
from plasmacloud.provision.spec import ClusterSpec

# A ULA prefix on the tap so dnsmasq can send router advertisements: without one, the
# Debian iPXE build waits ~16 s for IPv6 autoconfiguration on every boot.
RA_ADDRESS = "fd00:5c::1/64"


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class NetNames:
    """Names of the lab's kernel objects: unique per lab directory, so two labs (or a
    test and a developer's lab) never share a namespace or a tap."""

    namespace: str
    tap: str

    @classmethod
    def for_lab(cls, root: Path) -> NetNames:
        h = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        return cls(namespace=f"plasma-q{h}", tap=f"plq{h}")


def namespace_exists(name: str) -> bool:
    """True if ``ip netns list`` shows ``name``."""
    return any(line.split()[0] == name for line in _ip("netns", "list").splitlines() if line)


def in_namespace(ns: str, argv: list[str]) -> list[str]:
    """``argv`` run inside ``ns`` (``ip netns exec`` execs it, so the PID is argv's)."""
    return ["ip", "netns", "exec", ns, *argv]


def create_namespace(names: NetNames) -> None:
    """The lab's namespace with loopback up (idempotent)."""
    if not namespace_exists(names.namespace):
        _ip("netns", "add", names.namespace)
    _ip("-n", names.namespace, "link", "set", "lo", "up")


def start_switch(names: NetNames, vde_dir: Path, log: Path, server_cidr: str) -> Proc:
    """``vde_switch`` inside the namespace with its tap, addressed as the netboot server.

    The switch must outlive ``plasma lab up`` and exits on EOF of its console, so it runs
    as a daemon; its PID comes from its pidfile.
    """
    vde_dir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile = vde_dir / "switch.pid"
    pidfile.unlink(missing_ok=True)
    argv = [
        "vde_switch",
        "-d",
        "-p",
        str(pidfile),
        "-s",
        str(vde_dir / "switch"),
        "-M",
        str(vde_dir / "mgmt"),
        "-t",
        names.tap,
    ]
    with log.open("ab") as out:
        subprocess.run(
            in_namespace(names.namespace, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 5, "vde_switch pidfile")
    proc = Proc(role="switch", pid=int(pidfile.read_text()), argv=argv, log=str(log))
    ns = names.namespace
    _ip("-n", ns, "addr", "replace", server_cidr, "dev", names.tap)
    _ip("-n", ns, "-6", "addr", "replace", RA_ADDRESS, "dev", names.tap, "nodad")
    _ip("-n", ns, "link", "set", names.tap, "up")
    # The kernel gives the tap a link-local address that stays "tentative" for 1-2 s of
    # duplicate address detection; dnsmasq's router advertisements need it, and started
    # before it settles dnsmasq exits with "unknown interface".
    wait_for(lambda: _addresses_settled(ns, names.tap), 15, f"addresses on {names.tap}")
    return proc


def _addresses_settled(ns: str, dev: str) -> bool:
    out = _ip("-n", ns, "-o", "addr", "show", "dev", dev)
    return "inet6 fe80:" in out and "tentative" not in out


def lab_dnsmasq_conf(spec: ClusterSpec, names: NetNames, state_dir: Path, tftp: Path) -> str:
    """The provisioning dnsmasq config for the lab tap, plus router advertisements."""
    opts = DnsmasqOptions(
        tftp_root=tftp, state_dir=state_dir, interface=names.tap, mode="full", enable_ra=True
    )
    return dnsmasq_conf(spec, opts) + (
        "# RA-only IPv6 on the lab tap: iPXE finishes autoconfiguration at once.\n"
        f"dhcp-range=::,constructor:{names.tap},ra-only\n"
        f"ra-param={names.tap},10,0\n"
    )


def start_dnsmasq(spec: ClusterSpec, names: NetNames, state_dir: Path, log: Path) -> Proc:
    """dnsmasq in the foreground inside the namespace (so its PID is the one we hold)."""
    tftp = state_dir / "tftp"
    tftp.mkdir(parents=True, exist_ok=True)
    conf = state_dir / "dnsmasq.conf"
    conf.write_text(lab_dnsmasq_conf(spec, names, state_dir, tftp))
    # --user=root: dropping to nobody loses access to a lab dir under a 0700 parent
    # (pytest's tmp, ~/.local/state); it is confined to the lab namespace anyway.
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--user=root",
        "--log-facility=-",
        f"--conf-file={conf}",
    ]
    proc = spawn("dnsmasq", in_namespace(names.namespace, argv), log)
    return proc.model_copy(update={"argv": argv})


def start_netboot(
    names: NetNames,
    plasma: str,
    spec_path: Path,
    out: Path,
    images: Path,
    host: str,
    port: int,
    log: Path,
) -> Proc:
    """``plasma netboot serve`` inside the namespace on the server address."""
    argv = [
        plasma,
        "netboot",
        "serve",
        "--spec",
        str(spec_path),
        "--out",
        str(out),
        "--images",
        str(images),
        "--host",
        host,
        "--port",
        str(port),
    ]
    proc = spawn("netboot", in_namespace(names.namespace, argv), log)
    return proc.model_copy(update={"argv": argv})


def delete_namespace(names: NetNames) -> None:
    """Remove the namespace (its tap goes with it); safe when it is already gone."""
    if namespace_exists(names.namespace):
        _ip("netns", "del", names.namespace)


def leftovers(names: NetNames) -> list[str]:
    """What of this lab's network still exists (empty after a clean teardown)."""
    found = []
    if namespace_exists(names.namespace):
        found.append(f"namespace {names.namespace}")
    if names.tap in _ip("-o", "link", "show"):
        found.append(f"tap {names.tap} in the host namespace")
    return found
