"""First-boot agent against the real netboot server on 127.0.0.1, a temp root and loop
devices (never the host's disks); the LVM path through a recorded command runner."""

from __future__ import annotations

import asyncio
import re
import socket
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from plasmacloud.provision import agent
from plasmacloud.provision.disk import DiskError, DiskPrep, run_command
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.netboot import create_app, state_path
from plasmacloud.provision.spec import ClusterSpec, DiskSpec, parse_spec
from plasmacloud.provision.states import State, load_states

from .helpers import run_plasma

MAC1 = "52:54:00:00:01:01"


def _spec(tree: Path, disk: str | None = None) -> ClusterSpec:
    text = (tree / "cluster.yaml").read_text()
    if disk:
        text = text.replace(
            "- device: /dev/vda\n        root_size: 80G",
            f"- device: {disk}\n        root_size: 64M\n        layout: plain",
            1,
        )
    return parse_spec(text)[0]


async def _server(tree: Path, spec: ClusterSpec) -> TestServer:
    server = TestServer(create_app(spec, OutputLayout(tree / "out"), None), host="127.0.0.1")
    await server.start_server()
    return server


async def _run(server: TestServer, root: Path, **kw: object) -> list[agent.StepResult]:
    url = str(server.make_url("/")).rstrip("/")
    # iPXE fetch first: that is what moves the node to "booting" and unlocks its bundle.
    await asyncio.to_thread(_get, f"{url}/ipxe/{MAC1.replace(':', '-')}.ipxe")
    opts = agent.AgentOptions(server=url, mac=MAC1, root=root, **kw)  # type: ignore[arg-type]
    return await asyncio.to_thread(agent.Agent(opts).run)


def _get(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        resp.read()


@pytest.fixture
async def served(tree: Path) -> AsyncIterator[TestServer]:
    server = await _server(tree, _spec(tree))
    try:
        yield server
    finally:
        await server.close()


async def test_agent_installs_files_and_identity_then_second_run_is_noop(
    served: TestServer, tree: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n10.9.9.9\tkeepme\n")
    first = await _run(served, root, disks=False)
    assert [r.name for r in first] == ["files", "identity"]
    assert all(r.changes for r in first)
    secrets = root / "etc" / "nixos" / "secrets"
    key = secrets / "node01.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert stat.S_IMODE((secrets / "node01.crt").stat().st_mode) == 0o644
    assert key.read_bytes() == (tree / "out/node01/secrets/node01.key").read_bytes()
    assert (root / "etc/nixos/configuration.nix").exists()
    assert (root / "etc/hostname").read_text() == "node01\n"
    hosts = (root / "etc/hosts").read_text()
    assert "10.9.9.9\tkeepme" in hosts and "192.168.100.12\tnode02 node02.lab.local" in hosts
    unit = (root / agent.NETWORK_FILE).read_text()
    assert "Name=enp0s2" in unit and "Address=192.168.100.11/24" in unit
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

    second = await _run(served, root, disks=False)
    assert [r.changes for r in second] == [[], []]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes
    assert (root / "etc/hosts").read_text() == hosts  # the managed block is not duplicated

    # A hand-loosened key mode is repaired (and reported as a change).
    key.chmod(0o644)
    third = await _run(served, root, disks=False)
    assert third[0].changes == ["wrote /etc/nixos/secrets/node01.key (0400)"]
    status = load_states(state_path(OutputLayout(tree / "out"))).nodes["node01"]
    assert status.state == State.INSTALLED
    assert [e.step for e in status.events[-4:]] == ["fetch", "files", "identity", "done"]


async def test_agent_reports_failure(tree: Path, tmp_path: Path) -> None:
    server = await _server(tree, _spec(tree, disk="/dev/disk/by-id/plasmacloud-test-missing"))
    try:
        with pytest.raises(agent.AgentError, match="does not exist"):
            await _run(server, tmp_path / "root")
    finally:
        await server.close()
    status = load_states(state_path(OutputLayout(tree / "out"))).nodes["node01"]
    assert status.state == State.FAILED and "does not exist" in (status.error or "")


def test_agent_refuses_unknown_server(tmp_path: Path) -> None:
    opts = agent.AgentOptions(server="http://127.0.0.1:9", mac=MAC1, root=tmp_path)
    with pytest.raises(agent.AgentError, match=r"127\.0\.0\.1:9"):
        agent.Agent(opts).run()


def test_kernel_cmdline_args() -> None:
    line = "initrd=initrd plasmacloud.node=node01 plasmacloud.server=http://x:8080 quiet"
    assert agent.kernel_cmdline_args(line) == {"node": "node01", "server": "http://x:8080"}


# -- real partitioning on loop devices (sparse files; never the host's disks) ------------


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[str]:
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(800 * 1024 * 1024)
    dev = subprocess.run(
        ["losetup", "--show", "-f", "-P", str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], timeout=30, check=False)


def _uuid(dev: str) -> str:
    return subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "UUID", dev],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()


@pytest.mark.slow
async def test_agent_partitions_loop_disk_once(tree: Path, tmp_path: Path, loop_disk: str) -> None:
    server = await _server(tree, _spec(tree, disk=loop_disk))
    try:
        first = await _run(server, tmp_path / "root")
        disk_changes = first[0].changes
        assert disk_changes[0].startswith(f"partitioned {loop_disk} (ESP, root, data)")
        assert sum(c.startswith("formatted") for c in disk_changes) == 3
        fs = {
            p: DiskPrep(run_command).fstype(p)
            for p in (f"{loop_disk}p1", f"{loop_disk}p2", f"{loop_disk}p3")
        }
        assert list(fs.values()) == ["vfat", "ext4", "ext4"]
        uuids = [_uuid(p) for p in fs]
        second = await _run(server, tmp_path / "root")
        assert second[0].name == "disks" and second[0].changes == []
        assert [_uuid(p) for p in fs] == uuids  # nothing was reformatted
    finally:
        await server.close()


@pytest.mark.slow
def test_disk_with_foreign_data_needs_wipe(loop_disk: str) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "precious", loop_disk], check=True, timeout=60)
    disk = DiskSpec(device=loop_disk, root_size="64M", layout="plain")
    prep = DiskPrep(run_command)
    with pytest.raises(DiskError, match=r"ext4 signature.*--wipe"):
        prep.prepare(disk)
    assert prep.fstype(loop_disk) == "ext4"  # untouched
    done = prep.prepare(disk, wipe=True)
    assert done[0] == f"wiped {loop_disk}" and prep.partition_names(loop_disk) == [
        "ESP",
        "root",
        "data",
    ]


# -- the LVM layout through a recorded runner (this kernel has no device-mapper) ------


class FakeLVMDisk:
    """Answers sfdisk/blkid/vgs/lvs like a blank disk that becomes the LVM layout."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.table: list[str] | None = None
        self.fs: dict[str, str] = {}
        self.vg = False
        self.lvs: set[str] = set()
        self.nodes = {device}  # device nodes that exist
        self.missing_tools: set[str] = set()
        self.util_linux = True
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> tuple[int, str]:
        argv = list(argv)
        self.calls.append(argv)
        cmd = argv[0]
        if cmd == "sh":
            return (1 if argv[-1] in self.missing_tools else 0), ""
        if argv[1:] == ["--version"]:
            return 0, "blkid from util-linux 2.38.1" if self.util_linux else "BusyBox v1.35"
        if cmd == "test":
            return (0 if argv[-1] in self.nodes else 1), ""
        if cmd == "readlink":
            return 0, argv[-1]
        if cmd == "sfdisk" and argv[1] == "--json":
            if self.table is None:
                return 1, "does not contain a recognized partition table"
            parts = ",".join(f'{{"name": "{n}"}}' for n in self.table)
            return 0, f'{{"partitiontable": {{"partitions": [{parts}]}}}}'
        if cmd == "sfdisk":
            assert stdin is not None and "name=pv" in stdin
            self.table = ["ESP", "pv"]
            self.nodes |= {f"{self.device}1", f"{self.device}2"}
            return 0, ""
        if cmd == "blkid":
            return (0, self.fs[argv[-1]]) if argv[-1] in self.fs else (2, "")
        if cmd == "pvcreate":
            self.fs[argv[-1]] = "LVM2_member"
        elif cmd == "vgs":
            return (0 if self.vg else 5), ""
        elif cmd == "vgcreate":
            self.vg = True
        elif cmd == "lvs":
            return (0 if argv[1].split("/")[1] in self.lvs else 5), ""
        elif cmd == "lvcreate":
            self.lvs.add(argv[argv.index("-n") + 1])
            self.nodes.add(f"/dev/pool/{argv[argv.index('-n') + 1]}")  # active once created
        elif cmd == "vgchange":
            self.nodes |= {f"/dev/pool/{lv}" for lv in self.lvs}
        elif cmd.startswith("mkfs."):
            self.fs[argv[-1]] = "vfat" if cmd == "mkfs.vfat" else "ext4"
        return 0, ""


def test_lvm_layout_commands_and_idempotence() -> None:
    device = "/dev/fakedisk"
    fake = FakeLVMDisk(device)
    done = DiskPrep(fake).prepare(DiskSpec(device=device, root_size="80G"))
    assert done == [
        f"partitioned {device} (ESP, pv)",
        f"pvcreate {device}2",
        "vgcreate pool",
        "lvcreate pool/root",
        "lvcreate pool/data",
        f"formatted {device}1 (vfat)",
        "formatted /dev/pool/root (ext4)",
        "formatted /dev/pool/data (ext4)",
    ]
    assert ["lvcreate", "-y", "-L", "80G", "-n", "root", "pool"] in fake.calls
    assert ["lvcreate", "-y", "-l", "100%FREE", "-n", "data", "pool"] in fake.calls
    fake.calls.clear()
    assert DiskPrep(fake).prepare(DiskSpec(device=device, root_size="80G")) == []
    mutating = {"sfdisk", "pvcreate", "vgcreate", "lvcreate", "mkfs.vfat", "mkfs.ext4", "wipefs"}
    assert not [c for c in fake.calls if c[0] in mutating and c[1] != "--json"]


def test_lvm_volumes_of_an_earlier_install_are_activated_not_recreated() -> None:
    device = "/dev/fakedisk"
    fake = FakeLVMDisk(device)
    DiskPrep(fake).prepare(DiskSpec(device=device))
    fake.nodes -= {"/dev/pool/root", "/dev/pool/data"}  # a reboot: the LVs are inactive
    fake.calls.clear()
    assert DiskPrep(fake).prepare(DiskSpec(device=device)) == ["activated volume group pool"]
    assert ["vgchange", "-ay", "pool"] in fake.calls
    # activated before any filesystem is looked at, and nothing was formatted again
    first_blkid = next(i for i, c in enumerate(fake.calls) if c[0] == "blkid" and "pool" in c[-1])
    assert fake.calls.index(["vgchange", "-ay", "pool"]) < first_blkid
    mutating = {"sfdisk", "pvcreate", "vgcreate", "lvcreate", "mkfs.vfat", "mkfs.ext4", "wipefs"}
    assert not [c for c in fake.calls if c[0] in mutating and c[1] != "--json"]


def test_missing_tools_and_busybox_blkid_are_refused() -> None:
    fake = FakeLVMDisk("/dev/fakedisk")
    fake.missing_tools = {"lvcreate", "mkfs.vfat"}
    with pytest.raises(DiskError, match=r"missing mkfs\.vfat, lvcreate; .* and lvm2"):
        DiskPrep(fake).prepare(DiskSpec(device="/dev/fakedisk"))
    fake.missing_tools = set()
    fake.util_linux = False
    with pytest.raises(DiskError, match="not busybox"):
        DiskPrep(fake).prepare(DiskSpec(device="/dev/fakedisk", layout="plain"))
    assert not [c for c in fake.calls if c[0] in ("sfdisk", "mkfs.ext4", "wipefs")]


def test_foreign_partition_table_is_refused() -> None:
    device = "/dev/fakedisk"
    fake = FakeLVMDisk(device)
    fake.table = ["Microsoft basic data"]
    with pytest.raises(DiskError, match="Microsoft basic data"):
        DiskPrep(fake).prepare(DiskSpec(device=device))
    assert not [
        c for c in fake.calls if c[0] in ("wipefs", "mkfs.ext4") or c[:2] == ["sfdisk", "-q"]
    ]


# -- services and join, on loopback addresses --------------------------------------------


def _loopback_spec(tree: Path, ports: dict[str, int]) -> ClusterSpec:
    text = (tree / "cluster.yaml").read_text().replace("192.168.100.", "127.0.0.")
    for name, port in ports.items():
        text = re.sub(rf"{name}: \d+", f"{name}: {port}", text)
    return parse_spec(text)[0]


async def test_agent_starts_services_and_reports_joined(tree: Path, tmp_path: Path) -> None:
    host = "127.0.0.11"
    names = ("chainfire_client", "flaredb_http", "iam_http")
    listeners = []
    for _ in names:
        sock = socket.socket()
        sock.bind((host, 0))
        sock.listen()
        listeners.append(sock)
    ports = {n: s.getsockname()[1] for n, s in zip(names, listeners, strict=True)}
    rec = Recorder()
    server = await _server(tree, _loopback_spec(tree, ports))
    try:
        results = await _run(
            server, tmp_path / "root", disks=False, start=True, join_timeout=10.0, run=rec
        )
        assert [r.name for r in results] == ["files", "identity", "services", "join"]
        assert rec.calls == [
            [
                "systemctl",
                "enable",
                "--now",
                "plasmacloud-chainfire.service",
                "plasmacloud-flaredb.service",
                "plasmacloud-iam.service",
            ]
        ]
        assert results[-1].changes[0] == f"chainfire answers on {host}:{ports['chainfire_client']}"
        status = load_states(state_path(OutputLayout(tree / "out"))).nodes["node01"]
        assert status.state == State.JOINED

        listeners.pop().close()  # IAM stops answering
        with pytest.raises(agent.AgentError, match=r"join: not answering .*iam"):
            await _run(server, tmp_path / "root", disks=False, join_timeout=0.5)
        status = load_states(state_path(OutputLayout(tree / "out"))).nodes["node01"]
        assert status.state == State.FAILED
    finally:
        await server.close()
        for sock in listeners:
            sock.close()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> tuple[int, str]:
        self.calls.append(list(argv))
        return 0, ""


async def test_agent_cli(served: TestServer, tmp_path: Path) -> None:
    url = str(served.make_url("/")).rstrip("/")
    await asyncio.to_thread(_get, f"{url}/ipxe/{MAC1.replace(':', '-')}.ipxe")
    root = str(tmp_path / "root")
    args = ["agent", "--server", url, "--mac", MAC1, "--root", root, "--no-disks"]
    code, output = await asyncio.to_thread(run_plasma, *args)
    assert code == 0, output
    assert "files: wrote /etc/nixos/secrets/ca.crt" in output
    assert (tmp_path / "root/etc/nixos/secrets/node01.key").exists()
    code, output = await asyncio.to_thread(run_plasma, *args)
    assert code == 0 and "files: already right" in output
    # This host was not netbooted: without --server/--mac there is nothing to do.
    assert (await asyncio.to_thread(run_plasma, "agent", "--root", root))[0] == 2
