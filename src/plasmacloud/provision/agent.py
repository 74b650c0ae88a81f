"""``plasma agent``: the first-boot agent that installs a node from its config bundle.

Steps (each idempotent, each reported to the netboot server):

1. ``fetch``     the config bundle by MAC
2. ``disks``     partition and format the boot disk (refuses foreign data without --wipe)
3. ``mount``     mount the new filesystems under the target root (``--mount`` only)
4. ``files``     secrets and Nix files with their modes
5. ``identity``  hostname, /etc/hosts block for every peer, static network config
6. ``services``  enable and start the PlasmaCloud units (``--start``, on the installed system)
7. ``join``      wait until this node's services answer (``--join-timeout``), then "joined"

A second run (or a run after a reboot) changes nothing that is already right.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plasmacloud.common.config import Role
from plasmacloud.common.files import write_atomic
from plasmacloud.provision.bundle import ConfigBundle
from plasmacloud.provision.disk import DiskError, DiskPrep, Runner, mount_points, run_command
from plasmacloud.provision.nix import SERVICES
from plasmacloud.provision.states import State

log = logging.getLogger("plasmacloud.agent")
HOSTS_BEGIN = "# BEGIN plasmacloud (managed by plasma agent)"
HOSTS_END = "# END plasmacloud"
NETWORK_FILE = Path("etc/systemd/network/10-plasmacloud.network")
INSTALLER_ROOT = Path("/mnt")  # where the netboot installer mounts the new system


class AgentError(RuntimeError):
    """A step failed; already reported to the server."""


@dataclass
class StepResult:
    name: str
    changes: list[str]


@dataclass
class AgentOptions:
    server: str  # http://host:port of the netboot server
    mac: str
    root: Path = Path("/")
    disks: bool = True
    wipe: bool = False
    mount: bool = False
    start: bool = False
    join_timeout: float | None = None  # seconds to wait for the services; None = skip
    run: Runner = run_command


def post_report(
    server: str,
    node_id: str,
    mac: str,
    step: str,
    status: str,
    state: State | None = None,
    msg: str = "",
) -> None:
    """POST one step report to the netboot server at ``server`` (http://host:port);
    OSError (urllib's HTTPError included) if it was not taken."""
    body = {"mac": mac, "step": step, "status": status, "message": msg}
    if state is not None:
        body["state"] = state.value
    req = urllib.request.Request(
        f"{server.rstrip('/')}/api/v1/nodes/{node_id}/report",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10):
        pass


@dataclass
class Agent:
    """Runs the steps for one machine and reports each to the server."""

    opts: AgentOptions
    results: list[StepResult] = field(default_factory=list)

    # -- talking to the server -----------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.opts.server.rstrip('/')}{path}"

    def fetch(self) -> ConfigBundle:
        """Download this machine's config bundle."""
        url = self._url(f"/config/{self.opts.mac.replace(':', '-')}")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return ConfigBundle.model_validate(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise AgentError(f"{url}: HTTP {exc.code} {detail}") from exc
        except OSError as exc:
            raise AgentError(f"{url}: {exc}") from exc

    def report(
        self, node_id: str, step: str, status: str, state: State | None = None, msg: str = ""
    ) -> None:
        """Tell the server about a step; an unreachable server does not stop the install."""
        try:
            post_report(self.opts.server, node_id, self.opts.mac, step, status, state, msg)
        except OSError as exc:
            log.warning("agent: could not report %s/%s: %s", step, status, exc)

    # -- the steps -------------------------------------------------------------------

    def run(self) -> list[StepResult]:
        """Run every step; raises AgentError (after reporting it) on the first failure."""
        bundle = self.fetch()
        nid = bundle.node_id
        steps: list[tuple[str, Callable[[ConfigBundle], list[str]]]] = []
        if self.opts.disks:
            steps.append(("disks", self.step_disks))
        if self.opts.mount:
            steps.append(("mount", self.step_mount))
        steps += [("files", self.step_files), ("identity", self.step_identity)]
        cp = bundle.role == Role.CONTROL_PLANE
        if self.opts.start and cp:
            steps.append(("services", self.step_services))
        self.report(nid, "fetch", "ok", State.INSTALLING, f"bundle for {nid}")
        for name, step in steps:
            self._step(nid, name, step, bundle, State.INSTALLING)
        self.report(nid, "done", "ok", State.INSTALLED, "installed")
        if self.opts.join_timeout is not None and cp:
            self._step(nid, "join", self.step_join, bundle, State.JOINED)
        return self.results

    def _step(
        self,
        nid: str,
        name: str,
        step: Callable[[ConfigBundle], list[str]],
        bundle: ConfigBundle,
        state: State,
    ) -> None:
        try:
            changes = step(bundle)
        except (DiskError, OSError) as exc:
            self.report(nid, name, "failed", msg=str(exc))
            raise AgentError(f"{name}: {exc}") from exc
        self.results.append(StepResult(name, changes))
        summary = "; ".join(changes) or "already right"
        self.report(nid, name, "ok", state, summary)
        log.info("agent: %s: %s", name, summary)

    def step_disks(self, bundle: ConfigBundle) -> list[str]:
        return DiskPrep(self.opts.run).prepare(bundle.disks[0], wipe=self.opts.wipe)

    def step_mount(self, bundle: ConfigBundle) -> list[str]:
        disk = bundle.disks[0]
        done = []
        device = DiskPrep(self.opts.run).resolve(disk.path)
        for vol, rel in mount_points(disk, device):
            target = self.opts.root / rel
            if self.opts.run(["mountpoint", "-q", str(target)])[0] == 0:
                continue
            target.mkdir(parents=True, exist_ok=True)
            code, out = self.opts.run(["mount", vol.device, str(target)])
            if code != 0:
                raise DiskError(f"mount {vol.device} {target}: {out.strip()}")
            done.append(f"mounted {vol.device} on {target}")
        return done

    def step_files(self, bundle: ConfigBundle) -> list[str]:
        done = []
        for f in bundle.files:
            path = self.opts.root / f.path.lstrip("/")
            if _write(path, f.content, f.mode):
                done.append(f"wrote {f.path} ({f.mode:04o})")
        return done

    def step_identity(self, bundle: ConfigBundle) -> list[str]:
        root = self.opts.root
        done = []
        if _write(root / "etc/hostname", f"{bundle.hostname}\n".encode(), 0o644):
            done.append(f"hostname {bundle.hostname}")
        hosts_path = root / "etc/hosts"
        current = hosts_path.read_text() if hosts_path.exists() else "127.0.0.1\tlocalhost\n"
        if _write(hosts_path, managed_hosts(current, bundle).encode(), 0o644):
            done.append(f"/etc/hosts lists {len(bundle.hosts)} names")
        if _write(root / NETWORK_FILE, network_unit(bundle).encode(), 0o644):
            done.append(f"static address {bundle.ip}/{bundle.prefixlen} on {bundle.interface}")
        return done

    def step_services(self, bundle: ConfigBundle) -> list[str]:
        units = [f"plasmacloud-{name}.service" for name, _ in SERVICES]
        code, out = self.opts.run(["systemctl", "enable", "--now", *units])
        if code != 0:
            raise OSError(f"systemctl enable --now {' '.join(units)}: {out.strip()}")
        return []  # enable --now is idempotent; nothing to tell apart

    def step_join(self, bundle: ConfigBundle) -> list[str]:
        """Wait (bounded) until every local service accepts connections."""
        ports = {
            "chainfire": bundle.ports.chainfire_client,
            "flaredb": bundle.ports.flaredb_http,
            "iam": bundle.ports.iam_http,
        }
        deadline = time.monotonic() + (self.opts.join_timeout or 0)
        waiting = dict(ports)
        while True:
            waiting = {n: p for n, p in waiting.items() if not _answers(bundle.ip, p)}
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if waiting:
            names = ", ".join(f"{n} ({bundle.ip}:{p})" for n, p in waiting.items())
            raise OSError(f"not answering after {self.opts.join_timeout}s: {names}")
        return [f"{n} answers on {bundle.ip}:{p}" for n, p in ports.items()]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _write(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` with ``mode`` unless already so; True when something changed."""
    if path.exists() and path.read_bytes() == data:
        if (path.stat().st_mode & 0o7777) == mode:
            return False
        os.chmod(path, mode)
        return True
    write_atomic(path, data, mode)
    return True


def managed_hosts(current: str, bundle: ConfigBundle) -> str:
    """``current`` /etc/hosts with our block (every peer) replacing any previous one."""
    lines = current.splitlines()
    if HOSTS_BEGIN in lines and HOSTS_END in lines:
        lines = lines[: lines.index(HOSTS_BEGIN)] + lines[lines.index(HOSTS_END) + 1 :]
    by_ip: dict[str, list[str]] = {}
    for name, ip in bundle.hosts.items():
        by_ip.setdefault(ip, []).append(name)
    block = [HOSTS_BEGIN, *(f"{ip}\t{' '.join(names)}" for ip, names in by_ip.items()), HOSTS_END]
    return "\n".join([*lines, *block]) + "\n"


def network_unit(bundle: ConfigBundle) -> str:
    """systemd-networkd unit with the node's static address."""
    lines = ["[Match]", f"Name={bundle.interface}", "", "[Network]"]
    lines.append(f"Address={bundle.ip}/{bundle.prefixlen}")
    if bundle.gateway:
        lines.append(f"Gateway={bundle.gateway}")
    lines += [f"DNS={d}" for d in bundle.dns]
    return "\n".join(lines) + "\n"


def options_from_cmdline(
    cmdline: str,
    server: str | None = None,
    mac: str | None = None,
    root: Path | None = None,
    mount: bool | None = None,
    **rest: Any,
) -> AgentOptions:
    """Options for this machine: what is given, else the kernel command line's
    ``plasmacloud.server=``/``mac=``. Booted by our iPXE script (``server`` on the
    cmdline) we are the netboot installer, so the system goes onto the new disk mounted
    at /mnt. ValueError without a server and a MAC."""
    args = kernel_cmdline_args(cmdline)
    installer = "server" in args
    server, mac = server or args.get("server"), mac or args.get("mac")
    if not server or not mac:
        raise ValueError(
            "need --server and --mac (or plasmacloud.server=/mac= on the kernel cmdline)"
        )
    return AgentOptions(
        server=server,
        mac=mac,
        root=root or (INSTALLER_ROOT if installer else Path("/")),
        mount=installer if mount is None else mount,
        **rest,
    )


def installer_main() -> int:
    """``plasma agent`` as the netboot installer runs it, everything from the kernel
    command line; the image calls this without loading the rest of the CLI."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        opts = options_from_cmdline(Path("/proc/cmdline").read_text())
        results = Agent(opts).run()
    except (ValueError, OSError, AgentError) as exc:
        print(f"agent failed: {exc}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.name}: {'; '.join(r.changes) or 'already right'}")
    return 0


def kernel_cmdline_args(cmdline: str) -> dict[str, str]:
    """``plasmacloud.*`` arguments from /proc/cmdline (the iPXE script sets them)."""
    args = {}
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if sep and key.startswith("plasmacloud."):
            args[key.removeprefix("plasmacloud.")] = value
    return args
