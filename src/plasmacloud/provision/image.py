"""The netboot install image: a Debian kernel and an initramfs that runs ``plasma agent``.

Built on this machine from Debian packages, without installing anything into the
host's ``/boot``: ``apt-get download`` fetches ``linux-image-amd64``'s kernel,
``busybox-static``, ``dropbear-bin`` (SSH into the installer) and ``fdisk`` (sfdisk);
``dpkg-deb -x`` unpacks them into a scratch tree. The initramfs then gets:

- busybox (shell, ``ip``, ``udhcpc``, ``wget``, ``modprobe``) and a small ``/init``;
- the virtio, ext4 and vfat modules (with whatever they depend on) and their modules.dep;
- this host's Python interpreter with its standard library (tests and GUI modules
  pruned), the runtime dependencies of ``plasmacloud`` and the package itself, so the
  agent in the VM is exactly the code that runs here;
- ``mke2fs`` and every shared library the ELF files above need (found with ``ldd``).

Why not debootstrap: a minbase root filesystem took ~33 s and 240 MB and still lacked
the Python dependencies (Debian 12's pydantic is 1.x); copying the interpreter that is
already installed here is faster, smaller and runs the same versions.

The result is cached under ``<cache>/<key>/`` where ``key`` hashes every input (package
file names with versions, the Python runtime, the package sources, the builder itself),
so a second build with nothing changed returns at once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import plasmacloud
from plasmacloud.provision.templating import render_template

KERNEL_META = "linux-image-amd64"
# What the first-boot agent runs (provision/disk.py's TOOLS and LVM_TOOLS) besides
# busybox: sfdisk (fdisk), mkfs.vfat (dosfstools), LVM (lvm2, dmsetup), SSH into the
# installer (dropbear-bin and its two libraries). Libraries a fresh Debian host lacks
# (lvm2's libdevmapper-event, libaio) come as debs too: the image must not depend on
# what else happens to be installed on the build host.
EXTRA_PACKAGES = (
    "busybox-static",
    "fdisk",
    "dosfstools",
    "lvm2",
    "dmsetup",
    "libdevmapper1.02.1",
    "libdevmapper-event1.02.1",
    "libaio1",
    "dropbear-bin",
    "libtomcrypt1",
    "libtommath1",
)
MODULES = (
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_rng",
    "dm_mod",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
    "nls_ascii",  # Debian's FAT default iocharset
    "crc32c_generic",
)
# util-linux and e2fsprogs are essential on Debian: take them from the host.
HOST_TOOLS = ("/usr/sbin/mke2fs", "/usr/sbin/blkid", "/usr/sbin/wipefs", "/usr/bin/partx")
COMMAND_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")
PYTHON_DIR = "/opt/python"
# Standard-library parts an installer never imports; dropping them halves the image.
STDLIB_PRUNE = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "distutils",
    "venv",
}
# Bumped when the image layout changes in a way the other key inputs do not show.
LAYOUT_VERSION = "1"
KEEP_IMAGES = 3

# Where the node's service units live, and the command that controls them (also over
# SSH: `plasma lab chaos` against the QEMU lab).
VM_UNITS_DIR = "/run/plasmacloud"
VM_NODE_CTL = (f"{PYTHON_DIR}/bin/python3", "-m", "plasmacloud.lab.node_ctl", "--dir", VM_UNITS_DIR)


def init_script() -> str:
    """The image's /init (templates/image-init.sh.j2): mount, load drivers, DHCP on the
    NIC with the MAC the netboot server named, start SSH, then hand over to the
    first-boot agent and start the node's services as node_ctl units. Markers
    ("plasmacloud-init: ...") are what the lab reads from the serial console."""
    return render_template(
        "image-init.sh.j2", units_dir=VM_UNITS_DIR, node_ctl=shlex.join(VM_NODE_CTL)
    )


def plasma_script() -> str:
    """The image's ``plasma`` (templates/image-plasma.py.j2). The installer's ``plasma
    agent`` loads the agent alone: under emulation every import costs ~20 times what it
    does on the host. Anything else (a node's ``plasma chainfire|flaredb|iam serve``) is
    the CLI, whose command groups load their subsystems only when they run; a service's
    ``serve`` has its server module loaded first. The cyclic GC is paused while they load
    (~10% of import time) and on again before the command runs."""
    return render_template("image-plasma.py.j2", python_dir=PYTHON_DIR)


class ImageError(RuntimeError):
    """The image could not be built; the message says which step and how to fix it."""


@dataclass(frozen=True)
class Image:
    """A built (or cached) netboot image."""

    key: str
    directory: Path
    kernel: Path
    initrd: Path
    cached: bool
    seconds: float

    @property
    def size_bytes(self) -> int:
        return self.kernel.stat().st_size + self.initrd.stat().st_size


def default_cache_dir() -> Path:
    """``$PLASMA_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/plasmacloud/images``."""
    if env := os.environ.get("PLASMA_IMAGE_CACHE"):
        return Path(env).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "plasmacloud" / "images"


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ImageError(f"{what}: {argv[0]} not found (run scripts/setup.sh)") from exc
    if done.returncode != 0:
        raise ImageError(f"{what} failed ({' '.join(argv)}): {done.stderr.strip()[-500:]}")
    return done.stdout


# -- Debian packages ----------------------------------------------------------------------


def kernel_package() -> str:
    """The versioned kernel package ``linux-image-amd64`` currently points at."""
    out = _run(["apt-cache", "depends", KERNEL_META], f"resolve {KERNEL_META}")
    found = re.findall(r"Depends: (linux-image-[0-9][^\s]*)", out)
    if not found:
        raise ImageError(f"{KERNEL_META} depends on no kernel; run `apt-get update`")
    return found[0]


def download_debs(names: Iterable[str], into: Path) -> list[Path]:
    """``apt-get download`` each package's candidate version into ``into`` (a cache:
    a file already there is reused)."""
    into.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        policy = _run(["apt-cache", "policy", name], f"look up {name}")
        match = re.search(r"Candidate: (\S+)", policy)
        if match is None or match.group(1) == "(none)":
            raise ImageError(f"no Debian package {name}; run `apt-get update`")
        # apt writes an epoch's colon as %3a in file names
        pattern = f"{name}_{match.group(1).replace(':', '%3a')}_*.deb"
        if not list(into.glob(pattern)):
            _run(["apt-get", "download", name], f"apt-get download {name}", cwd=into)
        hit = sorted(into.glob(pattern))
        if not hit:
            raise ImageError(f"apt-get download {name} left no {pattern} in {into}")
        paths.append(hit[0])
    return paths


# -- what goes into the image ---------------------------------------------------------------


def runtime_distributions(root: str = "plasmacloud") -> list[md.Distribution]:
    """``root`` and every distribution it needs at run time (no extras), in a stable order."""
    # packaging is there wherever pip is (the build host), not in the image: import late
    from packaging.requirements import Requirement

    seen: dict[str, md.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional platform dependency that is not installed here
        seen[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [seen[k] for k in sorted(seen)]


def _package_sources() -> Path:
    return Path(plasmacloud.__file__).resolve().parent


def _files_under(root: Path) -> Iterator[Path]:
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            yield p


def cache_key(debs: list[Path]) -> str:
    """Hash of every input: debs, Python runtime and packages, sources, this builder."""
    h = hashlib.sha256()
    h.update(LAYOUT_VERSION.encode())
    h.update(Path(__file__).read_bytes())
    for deb in debs:
        h.update(deb.name.encode())
    h.update(sys.version.encode())
    for dist in runtime_distributions():
        h.update(f"{dist.metadata['Name']}=={dist.version}".encode())
    src = _package_sources()
    for p in _files_under(src):
        h.update(str(p.relative_to(src)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _add_debs(debs: list[Path], root: Path) -> None:
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpack {deb.name}")


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()  # never write through a symlink (it may point at busybox)
    if src.is_symlink():
        dst.symlink_to(os.readlink(src))
    else:
        shutil.copy2(src, dst)


def _copy_python(stage: Path) -> None:
    """The interpreter and a pruned stdlib under /opt/python (Python finds its home from
    the executable's location, so the prefix can move)."""
    prefix = Path(sys.base_prefix)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    dest = stage / PYTHON_DIR.lstrip("/")
    exe = Path(sys.executable).resolve()
    _copy(exe, dest / "bin" / ver)
    (dest / "bin" / "python3").symlink_to(ver)
    libdir = Path(sysconfig.get_config_var("LIBDIR") or prefix / "lib")
    for lib in libdir.glob(f"lib{ver}*.so*"):
        # a default search dir: the binary's rpath names the host's prefix, not ours
        _copy(lib, stage / "usr/lib/x86_64-linux-gnu" / lib.name)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for p in _files_under(stdlib):
        rel = p.relative_to(stdlib)
        if rel.parts[0] in STDLIB_PRUNE or rel.parts[0].startswith("config-"):
            continue
        if rel.parts[0] == "lib-dynload" and rel.name.startswith("_tkinter"):
            continue  # it alone would pull Tcl/Tk and X11 libraries into the image
        _copy(p, dest / "lib" / ver / rel)
    site = dest / "lib" / ver / "site-packages"
    for dist in runtime_distributions():
        if dist.metadata["Name"] == "plasmacloud":
            continue
        for f in dist.files or []:
            src = Path(str(dist.locate_file(f)))
            if src.is_file() and "__pycache__" not in src.parts and not f.name.endswith(".pyc"):
                _copy(src, site / f)
    for p in _files_under(_package_sources()):
        _copy(p, site / "plasmacloud" / p.relative_to(_package_sources()))
    # Compiled bytecode: under TCG every saved millisecond of import time counts.
    _run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", str(dest / "lib" / ver)],
        "compile the image's Python",
    )
    plasma = stage / "usr/bin/plasma"
    plasma.parent.mkdir(parents=True, exist_ok=True)
    plasma.write_text(plasma_script())
    plasma.chmod(0o755)


def _module_depends(ko: Path) -> list[str]:
    """The ``depends=`` entry of a module's .modinfo section (what ``modinfo -F depends``
    prints, without needing kmod on the host)."""
    m = re.search(rb"\0depends=([^\0]*)\0", ko.read_bytes())
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def _modules(kroot: Path, stage: Path) -> str:
    """Copy :data:`MODULES` and their dependencies and write ``modules.dep`` for busybox
    modprobe; returns the kernel version."""
    versions = [p.name for p in (kroot / "lib/modules").iterdir()]
    if len(versions) != 1:
        raise ImageError(f"expected one kernel in the package, found {versions}")
    kver = versions[0]
    base = kroot / "lib/modules" / kver
    by_name = {p.name.split(".ko")[0].replace("-", "_"): p for p in base.rglob("*.ko*")}
    todo, deps = list(MODULES), dict[str, list[str]]()
    while todo:
        name = todo.pop().replace("-", "_")
        if name in deps or name not in by_name:
            continue  # done already, or built into the kernel
        deps[name] = [d.replace("-", "_") for d in _module_depends(by_name[name])]
        todo += deps[name]

    def closure(name: str, order: list[str]) -> list[str]:
        # post-order: a module's dependencies come before it
        for d in deps.get(name, []):
            if d in deps and d not in order:
                closure(d, order)
        order.append(name)
        return order

    lines = []
    for name in sorted(deps):
        _copy(by_name[name], stage / by_name[name].relative_to(kroot))
        # modules.dep lists every transitive dependency, loaded last-to-first
        needs = closure(name, [])[:-1][::-1]
        rel = [str(by_name[n].relative_to(base)) for n in [name, *needs]]
        lines.append(f"{rel[0]}: {' '.join(rel[1:])}".rstrip())
    (stage / "lib/modules" / kver / "modules.dep").write_text("\n".join(lines) + "\n")
    (stage / "etc").mkdir(exist_ok=True)
    (stage / "etc/modules").write_text("\n".join(MODULES) + "\n")
    return kver


def _elf_files(stage: Path) -> list[Path]:
    out = []
    for p in stage.rglob("*"):
        if p.is_file() and not p.is_symlink() and not p.name.endswith((".ko", ".ko.xz")):
            with p.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(p)
    return out


def _copy_libraries(stage: Path, debroot: Path) -> None:
    """Every shared library the image's ELF files need: from the unpacked debs first,
    then from the host (same Debian release, so ABI-compatible)."""
    deb_libs = ":".join(
        str(debroot / d) for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")
    )
    py_lib = str(stage / "usr/lib/x86_64-linux-gnu")
    env = {**os.environ, "LD_LIBRARY_PATH": f"{py_lib}:{deb_libs}"}
    needed: set[Path] = set()
    for elf in _elf_files(stage):
        done = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, env=env)
        for line in done.stdout.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                needed.add(Path(m.group(1)))
        if "not found" in done.stdout and "statically" not in done.stdout:
            missing = [ln.strip() for ln in done.stdout.splitlines() if "not found" in ln]
            raise ImageError(f"{elf.relative_to(stage)} needs {missing}")
    for lib in sorted(needed):
        if str(lib).startswith(str(stage)):
            continue
        if str(lib).startswith(str(debroot)):
            dest = stage / lib.relative_to(debroot)
        else:
            dest = stage / lib.relative_to("/")
        real = lib.resolve()
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, dest)


def _strip_debug(stage: Path) -> None:
    """Drop debug sections from the image's programs and libraries (not kernel modules,
    whose signatures cover them): libpython and uvloop alone carry ~28 MB of them, which
    every VM would download and unpack under emulation on each boot."""
    elfs = [str(p) for p in _elf_files(stage)]
    for i in range(0, len(elfs), 200):
        _run(["strip", "--strip-debug", *elfs[i : i + 200]], "strip debug sections")


def _userland(debroot: Path, stage: Path) -> None:
    busybox = debroot / "bin/busybox"
    # Package commands first (sfdisk, lvm, dropbear...), then busybox fills the gaps.
    for d in COMMAND_DIRS:
        if (debroot / d).is_dir():
            for p in (debroot / d).iterdir():
                if p.name != "busybox":
                    _copy(p, stage / d / p.name)
    for tool in HOST_TOOLS:
        _copy(Path(tool), stage / tool.lstrip("/"))
    (stage / "usr/sbin/mkfs.ext4").symlink_to("mke2fs")
    _copy(busybox, stage / "bin/busybox")
    provided = {p.name for d in COMMAND_DIRS if (stage / d).is_dir() for p in (stage / d).iterdir()}
    for applet in _run([str(busybox), "--list-full"], "list busybox applets").split():
        if Path(applet).name not in provided:
            (stage / applet).parent.mkdir(parents=True, exist_ok=True)
            (stage / applet).symlink_to("/bin/busybox")
    for d in (
        "etc/dropbear",
        "etc/lvm",
        "run/lock",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "mnt",
        "var/log",
    ):
        (stage / d).mkdir(parents=True, exist_ok=True)
    # no udev in the installer: LVM creates its device nodes itself
    (stage / "etc/lvm/lvm.conf").write_text(render_template("image-lvm.conf.j2"))
    (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stage / "etc/group").write_text("root:x:0:\n")
    (stage / "etc/shells").write_text("/bin/sh\n")
    (stage / "etc/hosts").write_text("127.0.0.1 localhost\n")
    # udhcpc's hook configures each lease on its interface (the lab NIC's keeps the route)
    udhcpc = render_template("image-udhcpc.sh.j2")
    for name, text in (("init", init_script()), ("etc/udhcpc.script", udhcpc)):
        path = stage / name
        path.write_text(text)
        path.chmod(0o755)


# -- packing -------------------------------------------------------------------------------


def _cpio_entry(name: str, st: os.stat_result, data: bytes, ino: int) -> bytes:
    fields = [ino, st.st_mode, 0, 0, 1, int(st.st_mtime), len(data), 0, 0, 0, 0]
    header = "070701" + "".join(f"{v:08x}" for v in fields)
    header += f"{len(name) + 1:08x}" + "00000000"
    out = header.encode() + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def write_cpio(stage: Path, out: Path) -> None:
    """Pack ``stage`` as a newc cpio archive (what the kernel unpacks as initramfs),
    owned by root, then compress it with zstd (fast to decompress under TCG)."""
    raw = out.with_suffix(".cpio")
    with raw.open("wb") as f:
        paths = sorted(stage.rglob("*"))
        for ino, p in enumerate(paths, start=1):
            st = p.lstat()
            name = str(p.relative_to(stage))
            if stat.S_ISLNK(st.st_mode):
                data = os.readlink(p).encode()
            elif stat.S_ISREG(st.st_mode):
                data = p.read_bytes()
            else:
                data = b""
            f.write(_cpio_entry(name, st, data, ino))
        trailer = os.stat_result((0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0))
        f.write(_cpio_entry("TRAILER!!!", trailer, b"", 0))
        f.write(b"\0" * (-f.tell() % 512))
    _run(["zstd", "-q", "-f", "-6", "-T0", "--rm", str(raw), "-o", str(out)], "zstd initramfs")


def build_image(cache: Path | None = None, force: bool = False) -> Image:
    """Build (or reuse) the netboot kernel + initramfs; see the module docstring."""
    t0 = time.monotonic()
    cache = cache or default_cache_dir()
    debs = download_debs([kernel_package(), *EXTRA_PACKAGES], cache / "debs")
    key = cache_key(debs)
    final = cache / key
    kernel, initrd = final / "kernel", final / "initrd"
    if kernel.exists() and initrd.exists() and not force:
        return Image(key, final, kernel, initrd, True, time.monotonic() - t0)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as tmp:
        work = Path(tmp)
        debroot, stage = work / "debroot", work / "stage"
        _add_debs(debs, debroot)
        _userland(debroot, stage)
        kver = _modules(debroot, stage)
        _copy_python(stage)
        _copy_libraries(stage, debroot)
        _strip_debug(stage)
        out = work / "out"
        out.mkdir()
        shutil.copy2(debroot / "boot" / f"vmlinuz-{kver}", out / "kernel")
        write_cpio(stage, out / "initrd")
        (out / "KEY").write_text(key + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)  # atomic: a half-built image is never seen as cached
    prune(cache)
    return Image(key, final, kernel, initrd, False, time.monotonic() - t0)


def prune(cache: Path, keep: int = KEEP_IMAGES) -> list[Path]:
    """Delete all but the ``keep`` newest images (every source change makes a new one,
    ~65 MB each); returns what was deleted."""
    images = sorted(
        (p for p in cache.iterdir() if (p / "KEY").exists()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in images[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return images[keep:]
