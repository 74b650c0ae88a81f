"""QEMU lab pieces that need no VM: image packing, module closure, lab network config,
QEMU command lines, QMP, and PID-safe process records."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plasmacloud.cli import app
from plasmacloud.common.errors import EXIT_USAGE
from plasmacloud.lab import qemu, qemu_net
from plasmacloud.lab.backend import LabError
from plasmacloud.lab.control import Lab
from plasmacloud.lab.qemu import (
    QemuBackend,
    QemuPaths,
    VmRecord,
    ensure_ssh_key,
    lab_spec_text,
    qemu_argv,
    qmp,
    stage_image,
)
from plasmacloud.lab.qemu_layout import existing_qemu_lab
from plasmacloud.lab.qemu_proc import Proc, spawn, wait_for
from plasmacloud.lab.spec import LabSpec
from plasmacloud.provision import image
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.netboot import state_path
from plasmacloud.provision.spec import ClusterSpec, parse_spec
from plasmacloud.provision.states import State, StateStore

from .qemu_lab import prepared_qemu_lab

runner = CliRunner()


def _read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, content) of a newc cpio archive."""
    out, pos = {}, 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = data[pos : pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        content = data[pos : pos + size]
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, content)


def test_initramfs_archive_holds_files_links_and_modes(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "bin").mkdir(parents=True)
    (stage / "bin/busybox").write_bytes(b"\x7fELF fake")
    (stage / "bin/busybox").chmod(0o755)
    (stage / "bin/sh").symlink_to("busybox")
    (stage / "init").write_text("#!/bin/sh\necho hi\n")
    image.write_cpio(stage, tmp_path / "initrd")
    raw = subprocess.run(
        ["zstd", "-dc", str(tmp_path / "initrd")], capture_output=True, check=True
    ).stdout
    entries = _read_newc(raw)
    assert set(entries) == {"bin", "bin/busybox", "bin/sh", "init"}
    assert entries["bin/sh"] == (0o120777, b"busybox")
    assert entries["bin/busybox"][0] & 0o777 == 0o755
    assert entries["init"][1] == b"#!/bin/sh\necho hi\n"
    assert entries["bin"][0] & 0o170000 == 0o040000


def _fake_module(root: Path, rel: str, depends: str) -> None:
    path = root / "lib/modules/6.1.0-test/kernel" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=x\0")


def test_modules_copies_dependency_closure_and_writes_load_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kroot, stage = tmp_path / "deb", tmp_path / "stage"
    _fake_module(kroot, "drivers/net/virtio_net.ko", "net_failover")
    _fake_module(kroot, "drivers/net/net_failover.ko", "failover")
    _fake_module(kroot, "net/core/failover.ko", "")
    _fake_module(kroot, "drivers/unused.ko", "")
    monkeypatch.setattr(image, "MODULES", ("virtio_net", "built_in_one"))
    assert image._modules(kroot, stage) == "6.1.0-test"
    base = stage / "lib/modules/6.1.0-test"
    dep = dict(line.split(":", 1) for line in (base / "modules.dep").read_text().splitlines())
    # kmod/busybox load a line's dependencies last-to-first: failover, then net_failover
    assert dep["kernel/drivers/net/virtio_net.ko"].split() == [
        "kernel/drivers/net/net_failover.ko",
        "kernel/net/core/failover.ko",
    ]
    assert dep["kernel/net/core/failover.ko"].strip() == ""
    assert not (base / "kernel/drivers/unused.ko").exists()
    assert (stage / "etc/modules").read_text().split() == ["virtio_net", "built_in_one"]


def test_runtime_distributions_are_the_package_and_its_runtime_deps_only() -> None:
    names = {d.metadata["Name"].lower() for d in image.runtime_distributions()}
    assert {"plasmacloud", "pydantic", "pydantic_core", "grpcio", "aiohttp"} <= names
    assert not {"pytest", "mypy", "ruff", "hypothesis"} & names  # dev extra stays out


def test_cache_key_follows_the_package_versions(tmp_path: Path) -> None:
    a = [tmp_path / "linux-image-6.1.0-1-amd64_6.1.1-1_amd64.deb"]
    b = [tmp_path / "linux-image-6.1.0-2-amd64_6.1.2-1_amd64.deb"]
    assert image.cache_key(a) == image.cache_key(a)
    assert image.cache_key(a) != image.cache_key(b)


def test_cached_image_is_returned_without_rebuilding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image, "download_debs", lambda names, into: [into / "x_1_amd64.deb"])
    monkeypatch.setattr(image, "kernel_package", lambda: "linux-image-test")
    key = image.cache_key([tmp_path / "debs" / "x_1_amd64.deb"])
    (tmp_path / key).mkdir()
    (tmp_path / key / "kernel").write_bytes(b"k")
    (tmp_path / key / "initrd").write_bytes(b"i")
    img = image.build_image(tmp_path)
    assert img.cached and img.key == key and img.kernel.read_bytes() == b"k"


def test_lab_names_are_unique_per_lab_and_fit_interface_names(tmp_path: Path) -> None:
    a = qemu_net.NetNames.for_lab(tmp_path / "a")
    b = qemu_net.NetNames.for_lab(tmp_path / "b")
    assert a != b and a == qemu_net.NetNames.for_lab(tmp_path / "a")
    assert len(a.tap) <= 15 and a.namespace.startswith("plasma-q")


def _lab_spec(tmp_path: Path, tap: str = "plqtest0") -> ClusterSpec:
    spec, issues = parse_spec(lab_spec_text(ensure_ssh_key(tmp_path / "ssh/id_ed25519"), tap))
    assert not issues
    return spec


def test_lab_spec_is_the_seed_cluster_on_the_lab_tap(tmp_path: Path) -> None:
    spec = _lab_spec(tmp_path)
    assert [n.mac for n in spec.nodes] == [f"52:54:00:00:01:0{i}" for i in (1, 2, 3)]
    assert [str(n.ip) for n in spec.nodes] == [f"192.168.100.1{i}" for i in (1, 2, 3)]
    assert spec.netboot.interface == "plqtest0"
    assert spec.netboot.dhcp_range is not None
    assert all(ip in spec.network.cidr for ip in spec.netboot.dhcp_range)
    assert os.stat(tmp_path / "ssh/id_ed25519").st_mode & 0o777 == 0o600


def test_lab_dnsmasq_serves_only_the_tap_with_pins_and_router_adverts(tmp_path: Path) -> None:
    spec = _lab_spec(tmp_path)
    names = qemu_net.NetNames(namespace="plasma-qtest", tap="plqtest0")
    conf = qemu_net.lab_dnsmasq_conf(spec, names, tmp_path, tmp_path / "tftp")
    lines = conf.splitlines()
    assert "interface=plqtest0" in lines and "bind-interfaces" in lines and "port=0" in lines
    assert "dhcp-host=52:54:00:00:01:02,192.168.100.12,node02,infinite" in lines
    assert "enable-ra" in lines and "dhcp-range=::,constructor:plqtest0,ra-only" in lines
    assert any(line.startswith("dhcp-boot=tag:ipxe,http://192.168.100.1:8080/") for line in lines)
    (tmp_path / "tftp").mkdir()
    path = tmp_path / "dnsmasq.conf"
    path.write_text(conf)
    done = subprocess.run(["dnsmasq", "--test", f"--conf-file={path}"], capture_output=True)
    assert done.returncode == 0, done.stderr


def test_vm_command_line_pxe_boots_the_lab_nic_and_forwards_only_loopback_ssh(
    tmp_path: Path,
) -> None:
    argv = qemu_argv(QemuPaths(tmp_path), "node02", "52:54:00:00:01:02", "tcg", 384, 2202)
    text = " ".join(argv)
    assert "q35,accel=tcg" in text and "-m 384" in text
    assert f"vde,id=lab,sock={tmp_path / 'vde/switch'}" in text
    assert "virtio-net-pci,netdev=lab,mac=52:54:00:00:01:02,bootindex=1" in text
    assert "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:2202-:22" in text
    assert "virtio-net-pci,netdev=mgmt,romfile=" in text  # never PXE on the mgmt NIC
    assert f"unix:{tmp_path / 'node02/qmp.sock'},server=on,wait=off" in text
    no_ssh = qemu_argv(QemuPaths(tmp_path), "node02", "52:54:00:00:01:02", "tcg", 384, None)
    assert not any("hostfwd" in a for a in no_ssh)


def test_qmp_negotiates_capabilities_then_runs_the_command(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    seen: list[str] = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def fake_qemu() -> None:
        conn, _ = server.accept()
        f = conn.makefile("rw")
        f.write('{"QMP": {"version": {}, "capabilities": []}}\n')
        f.flush()
        for _ in range(2):
            cmd = json.loads(f.readline())["execute"]
            seen.append(cmd)
            if cmd == "query-status":
                f.write('{"event": "NOISE"}\n')  # async events are skipped
                f.write('{"return": {"status": "running", "running": true}}\n')
            else:
                f.write('{"return": {}}\n')
            f.flush()
        conn.close()

    t = threading.Thread(target=fake_qemu, daemon=True)
    t.start()
    reply = qmp(path, "query-status")
    t.join(5)
    server.close()
    assert seen == ["qmp_capabilities", "query-status"]
    assert reply["return"]["status"] == "running"


def test_process_record_never_signals_a_pid_running_something_else(tmp_path: Path) -> None:
    proc = spawn("sleeper", ["sleep", "60"], tmp_path / "sleep.log")
    try:
        impostor = Proc(role="vm:node01", pid=proc.pid, argv=["qemu-system-x86_64", "-name"])
        wait_for(proc.alive, 5, "sleep exec'd")  # between fork and exec it is still python
        assert not impostor.alive()
        impostor.stop()  # a no-op: the pid does not run what the record says
        assert proc.alive()
    finally:
        proc.stop(grace=1)
    assert not proc.alive()


# Re-executes itself (same argv) 100 times, then sleeps: during each execve the kernel
# shows an empty /proc/PID/cmdline for a moment.
_REEXEC = (
    "import os, sys, time\n"
    "n = int(os.environ['N'])\n"
    "if n < 100:\n"
    "    os.environ['N'] = str(n + 1)\n"
    "    os.execv(sys.executable, [sys.executable, '-S', '-c', sys.argv[-1], sys.argv[-1]])\n"
    "time.sleep(30)\n"
)


def test_a_process_between_two_execs_is_still_alive(tmp_path: Path) -> None:
    # `ip netns exec` hands over to dnsmasq and the netboot server the same way; a
    # record that read that moment as an exit made `lab up` tear its network down.
    argv = [sys.executable, "-S", "-c", _REEXEC, _REEXEC]
    proc = spawn("reexec", argv, tmp_path / "reexec.log", env={"N": "0"})
    try:
        checks = [proc.alive() for _ in range(3000)]
        assert all(checks), f"{checks.count(False)} of {len(checks)} checks saw it dead"
    finally:
        proc.stop(grace=1)
    assert not proc.alive()  # and a real exit is still seen at once


def test_prune_keeps_the_newest_images_only(tmp_path: Path) -> None:
    for i, key in enumerate(["a1", "b2", "c3", "d4"]):
        (tmp_path / key).mkdir()
        (tmp_path / key / "KEY").write_text(key)
        os.utime(tmp_path / key, (1000 + i, 1000 + i))
    (tmp_path / "debs").mkdir()
    removed = image.prune(tmp_path, keep=2)
    assert [p.name for p in removed] == ["b2", "a1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c3", "d4", "debs"]


# -- a lab tree without VMs: TCG timing, IAM arguments, the KVM probe cache, lab kind ------


def _prepared(tmp_path: Path) -> QemuBackend:
    return prepared_qemu_lab(tmp_path / "lab")


def test_lab_configs_carry_raft_timing_for_emulated_cpus(tmp_path: Path) -> None:
    backend = _prepared(tmp_path)
    configs, _tls, _services = backend.validation_target()
    for cfg in configs:
        assert cfg.raft.election_timeout_ms == (1500, 3000)
        assert cfg.raft.heartbeat_ms == 200


def test_iam_lab_nodes_get_their_auth_arguments_on_the_kernel_cmdline(tmp_path: Path) -> None:
    backend = _prepared(tmp_path)
    configs, _tls, _services = backend.validation_target()
    kernel, initrd = tmp_path / "kernel", tmp_path / "initrd"
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    img = image.Image("key", tmp_path, kernel, initrd, True, 0.0)
    images = backend.paths.images
    stage_image(img, images, ["chainfire", "flaredb", "iam"], configs)
    shared = (images / "cmdline").read_text().split()
    assert "plasmacloud.services=chainfire,flaredb,iam" in shared
    node02 = (images / "node02" / "cmdline").read_text().split()
    assert node02[: len(shared)] == shared
    urls = [f"https://192.168.100.1{i}:8443" for i in (2, 1, 3)]  # its own first
    assert f"plasmacloud.iam_urls={','.join(urls)}" in node02
    # no certificate skips IAM: the operator's (CN admin) is IAM's admin user
    assert not any(arg.startswith("plasmacloud.trusted_cn") for arg in node02)
    # the init script turns them into the flags the process lab starts services with
    init = image.init_script()
    assert "--iam-url $url" in init and "--trusted-cn" not in init
    # without IAM nothing per node is left behind
    stage_image(img, images, ["chainfire", "flaredb"], configs)
    assert not (images / "node02" / "cmdline").exists()


def test_kvm_probe_runs_once_per_host_and_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plasmacloud.lab import qemu

    calls: list[Path] = []

    def probe(img: image.Image, timeout: float = 20.0) -> bool:
        calls.append(img.directory)
        return False

    def built(key: str, kernel: bytes) -> image.Image:
        d = tmp_path / key
        d.mkdir(exist_ok=True)
        (d / "kernel").write_bytes(kernel)
        return image.Image(key, d, d / "kernel", d / "initrd", True, 0.0)

    monkeypatch.setattr(qemu, "kvm_boots", probe)
    img = built("k1", b"vmlinuz 6.1")
    assert qemu.cached_kvm_boots(img) is False
    assert qemu.cached_kvm_boots(img) is False
    assert len(calls) == 1
    # a new image (the package's sources changed) with the same kernel: no new probe
    assert qemu.cached_kvm_boots(built("k2", b"vmlinuz 6.1")) is False and len(calls) == 1
    assert qemu.cached_kvm_boots(built("k3", b"vmlinuz 6.2")) is False and len(calls) == 2
    record = tmp_path / qemu.KVM_PROBE_FILE
    seen = json.loads(record.read_text())
    record.write_text(json.dumps({**seen, "host": "another machine", "kvm": True}))
    assert qemu.cached_kvm_boots(img) is False and len(calls) == 3  # other host: probe again


def test_lab_commands_detect_a_qemu_lab_from_its_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _prepared(tmp_path)
    root = backend.paths.root
    assert existing_qemu_lab(root) == root.resolve()
    process = tmp_path / "process"
    Lab.open(process, LabSpec()).prepare()
    assert existing_qemu_lab(process) is None
    # no --dir: the default qemu lab, unless a process lab is in the default place
    monkeypatch.delenv("PLASMA_LAB_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert existing_qemu_lab(None) is None
    default_qemu = tmp_path / "state/plasmacloud/lab-qemu"
    QemuBackend(default_qemu)._save()
    assert existing_qemu_lab(None) == default_qemu.resolve()
    Lab.open(tmp_path / "state/plasmacloud/lab", LabSpec()).prepare()
    assert existing_qemu_lab(None) is None


def test_lab_env_logs_and_down_understand_a_qemu_lab(tmp_path: Path) -> None:
    backend = _prepared(tmp_path)
    root = str(backend.paths.root)
    result = runner.invoke(app, ["lab", "env", "--dir", root])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"export PLASMA_LAB_NETNS={backend.names.namespace}" in lines
    assert (
        "export ETCDCTL_ENDPOINTS=https://192.168.100.11:2379,https://192.168.100.12:2379,"
        "https://192.168.100.13:2379"
    ) in lines
    assert f"export ETCDCTL_CERT={backend.paths.out}/pki/clients/admin.crt" in lines
    assert "export IAM_URL=https://192.168.100.11:8443" in lines
    assert not any("ETCDCTL_USER" in line for line in lines)  # no admin bootstrapped yet

    serial = backend.paths.serial("node02")
    serial.parent.mkdir(parents=True)
    serial.write_text("".join(f"line {i}\n" for i in range(100)))
    result = runner.invoke(app, ["lab", "logs", "node02", "--dir", root, "-n", "2"])
    assert result.exit_code == 0 and result.output == "line 98\nline 99\n"

    result = runner.invoke(app, ["lab", "kill", "node02", "--dir", root, "--signal", "STOP"])
    assert result.exit_code == EXIT_USAGE
    result = runner.invoke(app, ["lab", "ssh", "node02", "--dir", root])  # no VM runs
    assert result.exit_code == EXIT_USAGE
    process = tmp_path / "process"
    Lab.open(process, LabSpec()).prepare()
    result = runner.invoke(app, ["lab", "ssh", "node02", "--dir", str(process)])
    assert result.exit_code == EXIT_USAGE and "needs a qemu lab" in result.output
    result = runner.invoke(app, ["lab", "down", "--dir", root, "--wipe"])
    assert result.exit_code == 0, result.output
    assert not backend.paths.state.exists() and not backend.paths.out.exists()
    assert not serial.exists() and backend.paths.ssh_key.exists()


# the image's `plasma`, saying at exit whether the cyclic GC is on and which of our
# modules it loaded
_LOADED = (
    "import atexit, gc, sys\n"
    "atexit.register(lambda: print('GC', gc.isenabled(), 'LOADED', *sorted(m for m in"
    " sys.modules if m.startswith('plasmacloud.'))))\n"
) + image.plasma_script()


@pytest.mark.parametrize("group", ["chainfire", "flaredb", "iam"])
def test_image_plasma_runs_a_service_group_without_other_subsystems(group: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, group, "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"plasma {group} serve" in done.stdout and "--config" in done.stdout
    loaded = done.stdout.split("LOADED")[-1].split()
    assert f"plasmacloud.cli.{group}" in loaded
    # its server loaded up front with the GC paused, which is on again for the command
    assert f"plasmacloud.{group}.server" in loaded and "GC True LOADED" in done.stdout
    heavy = {"plasmacloud.lab.qemu", "plasmacloud.lab.control", "plasmacloud.provision.spec"}
    assert not heavy & set(loaded)


def test_image_plasma_agent_is_the_agent_alone_and_the_rest_the_whole_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, "agent"], capture_output=True, text=True, timeout=120
    )
    # on the host /proc/cmdline names no netboot server: the agent says what it needs
    assert done.returncode == 1 and "need --server and --mac" in done.stderr
    assert not [m for m in done.stdout.split() if m.startswith("plasmacloud.cli")]
    assert "GC True LOADED" in done.stdout
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, "version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.startswith("0.")
    loaded = done.stdout.split()
    assert "plasmacloud.cli.lab" in loaded and "GC True LOADED" in done.stdout
    assert not [m for m in loaded if m.endswith(".server")]  # not a service: none loaded


def test_reboot_waits_for_an_installed_reached_after_the_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node was installed before the reset: that old "installed" must not end the wait;
    # the next boot's must. The netboot server's records are written here as it would.
    backend = _prepared(tmp_path)
    sleepers = [spawn(role, ["sleep", "60"], tmp_path / f"{role}.log") for role in _ROLES]
    try:
        wait_for(lambda: all(p.alive() for p in sleepers), 5, "sleepers exec'd")
        backend.state.infra = sleepers[:3]
        backend.state.vms = [VmRecord(node_id="node01", mac=MAC1, proc=sleepers[3], ssh_port=None)]
        store = StateStore(state_path(OutputLayout(backend.paths.out)), {"node01": MAC1})
        for state in (State.BOOTING, State.INSTALLING, State.INSTALLED):
            store.transition("node01", state)
        resets: list[str] = []

        def reset(node_id: str) -> None:
            resets.append(node_id)
            threading.Timer(1.2, store.transition, ("node01", State.BOOTING)).start()
            threading.Timer(1.6, store.transition, ("node01", State.INSTALLING)).start()
            threading.Timer(2.0, store.transition, ("node01", State.INSTALLED)).start()

        monkeypatch.setattr(backend, "reset_node", reset)
        backend.reboot(["node01"], timeout=30)
        assert resets == ["node01"]
        events = backend.provisioning().nodes["node01"].events
        assert [e.state for e in events[-3:]] == [State.BOOTING, State.INSTALLING, State.INSTALLED]
        assert len(events) == 6  # it returned on the second "installed", not the first

        monkeypatch.setattr(backend, "reset_node", resets.append)  # a reset nothing follows
        with pytest.raises(LabError, match=r"node01 is installed, not installed \(after the r"):
            backend.reboot(["node01"], timeout=1)
        store.transition("node01", State.JOINED)  # joined: installed, and a member
        assert backend.wait_installed("node01", timeout=1).state == State.JOINED
    finally:
        for p in sleepers:
            p.stop(grace=1)


_ROLES = ("switch", "dnsmasq", "netboot", "vm:node01")
MAC1 = "52:54:00:00:01:01"


def test_image_init_writes_each_service_as_a_node_ctl_unit(tmp_path: Path) -> None:
    # The init's unit block, run by a POSIX sh with a stand-in `plasma` on PATH and the
    # units directory moved here; node_ctl must read back exactly the argv to run, and
    # preload the CLI and those services' servers.
    init = image.init_script()
    start = init.index("  units=")
    end = init.index(f"  {shlex.join(image.VM_NODE_CTL)} start")
    block = init[start:end].replace(image.VM_UNITS_DIR, str(tmp_path / "units"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/plasma").write_text("#!/bin/sh\n")
    (tmp_path / "bin/plasma").chmod(0o755)
    auth = "--iam-url https://192.168.100.11:8443 --iam-url https://192.168.100.12:8443"
    script = f'services="chainfire iam"; auth=" {auth}"\n{block}echo $names\necho $preload'
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    names, preload = done.stdout.splitlines()
    assert names.split() == ["plasmacloud-chainfire", "plasmacloud-iam"]
    modules = ["plasmacloud.cli", "plasmacloud.chainfire.server", "plasmacloud.iam.server"]
    assert preload.split() == [w for m in modules for w in ("--preload", m)]
    for module in modules:
        importlib.import_module(module)  # names that exist
    config = ["--config", "/etc/nixos/secrets/cluster-config.json"]
    plasma = str(tmp_path / "bin/plasma")
    units = tmp_path / "units"
    assert json.loads((units / "plasmacloud-chainfire.argv").read_text()) == [
        plasma, "chainfire", "serve", *config, *auth.split()
    ]  # fmt: skip
    assert json.loads((units / "plasmacloud-iam.argv").read_text()) == [
        plasma, "iam", "serve", *config
    ]  # fmt: skip


def test_mark_joined_reports_only_installed_nodes_to_the_netboot_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The report itself (post_report, shared with the agent) is exercised against a real
    # netboot server by the agent tests; here: whom the lab reports, where, and as what.
    backend = _prepared(tmp_path)
    macs = {f"node0{i}": f"52:54:00:00:01:0{i}" for i in (1, 2, 3)}
    store = StateStore(state_path(OutputLayout(backend.paths.out)), macs)
    for state in (State.BOOTING, State.INSTALLING, State.INSTALLED):
        store.transition("node01", state)
    store.transition("node02", State.BOOTING)
    sent: list[tuple[object, ...]] = []

    def post(*args: object) -> None:
        sent.append(args)
        store.transition(str(args[1]), State.JOINED)

    monkeypatch.setattr(qemu, "post_report", post)
    backend.mark_joined(list(macs), "leader node02")
    server = "http://192.168.100.1:8080"
    assert sent == [(server, "node01", MAC1, "join", "ok", State.JOINED, "leader node02")]
    backend.mark_joined(list(macs), "leader node02")  # already joined: nothing more
    assert len(sent) == 1


def test_down_stops_what_the_state_file_records_now(tmp_path: Path) -> None:
    """A lab opened before add-node ran (in another process) still takes down the
    dnsmasq, netboot server and VM that add-node started and recorded."""
    opened_first = _prepared(tmp_path)
    later = QemuBackend(opened_first.paths.root, ssh=False)
    started = spawn("netboot", ["sleep", "60"], tmp_path / "netboot.log")
    later.state.infra.append(started)
    later._save()
    assert started.alive()
    opened_first.down()
    assert not started.alive()
    assert QemuBackend(opened_first.paths.root).state.infra == []


def test_rolling_restart_of_a_qemu_lab_refuses_an_upgrade(tmp_path: Path) -> None:
    backend = _prepared(tmp_path)
    root = str(backend.paths.root)
    argv = ["cluster", "rolling-restart", "--dir", root, "--upgrade", "/usr/bin/true"]
    result = runner.invoke(app, argv)
    assert result.exit_code == EXIT_USAGE
    assert "--upgrade needs a process or netns lab" in result.output
