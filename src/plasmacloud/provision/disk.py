"""Partition and format a node's boot disk per its spec, idempotently and carefully.

Same layout as the rendered ``disko.nix``: GPT, 512 MiB ESP (vfat), then either an LVM
PV holding ``pool/root`` and ``pool/data`` or plain ``root`` and ``data`` partitions.

Never destroys data by surprise (disko/nixos-anywhere users' worst complaint): a disk
that already has our layout is left alone (filesystems missing after a crash are
created, nothing else); a disk with anything else on it is refused unless ``wipe``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from plasmacloud.provision.spec import DiskSpec

VG = "pool"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
LVM_TYPE = "E6D6D379-F71E-44CA-AEA6-2E3AB6B3C6A1"
TOOLS = ("sfdisk", "blkid", "wipefs", "partx", "mkfs.vfat", "mkfs.ext4")
LVM_TOOLS = ("pvcreate", "vgcreate", "vgs", "lvs", "lvcreate", "vgchange")


class DiskError(RuntimeError):
    """The disk cannot be prepared safely; the message says why and what to do."""


class Runner(Protocol):
    """Runs a command; returns (exit code, output). Tests substitute a recorder."""

    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> tuple[int, str]: ...


def run_command(argv: Sequence[str], stdin: str | None = None) -> tuple[int, str]:
    """Run a real command (bounded by a timeout); stderr is appended to stdout."""
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, proc.stdout + proc.stderr


@dataclass(frozen=True)
class Volume:
    """One filesystem of the layout."""

    name: str  # partition name / LV name / label
    fstype: str  # vfat | ext4
    device: str


def _part(disk: str, n: int) -> str:
    """Kernel name of partition ``n``: /dev/sda1, /dev/nvme0n1p1, /dev/loop0p1."""
    return f"{disk}p{n}" if disk[-1].isdigit() else f"{disk}{n}"


def layout(disk: DiskSpec, device: str) -> tuple[list[str], list[Volume]]:
    """(GPT partition names, filesystems to create) for ``device`` (a resolved /dev path)."""
    esp = Volume("ESP", "vfat", _part(device, 1))
    if disk.layout == "plain":
        return ["ESP", "root", "data"], [
            esp,
            Volume("root", "ext4", _part(device, 2)),
            Volume("data", "ext4", _part(device, 3)),
        ]
    return ["ESP", "pv"], [
        esp,
        Volume("root", "ext4", f"/dev/{VG}/root"),
        Volume("data", "ext4", f"/dev/{VG}/data"),
    ]


def sfdisk_script(disk: DiskSpec) -> str:
    """The sfdisk input creating the GPT for ``disk``'s layout."""
    lines = ["label: gpt", f"size=512MiB, type={ESP_TYPE}, name=ESP"]
    if disk.layout == "plain":
        lines += [
            f"size={disk.root_size}iB, type={LINUX_TYPE}, name=root",
            f"type={LINUX_TYPE}, name=data",
        ]
    else:
        lines.append(f"type={LVM_TYPE}, name=pv")
    return "\n".join(lines) + "\n"


@dataclass
class DiskPrep:
    """Prepares one disk through a :class:`Runner`."""

    run: Runner
    settle_seconds: float = 10.0  # wait this long for partition device nodes

    def fstype(self, device: str) -> str:
        """Filesystem/signature type on ``device`` ("" if none or absent)."""
        code, out = self.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device])
        return out.strip() if code == 0 else ""

    def partition_names(self, device: str) -> list[str] | None:
        """GPT partition names, or None when the disk has no partition table."""
        code, out = self.run(["sfdisk", "--json", device])
        if code != 0:
            return None
        try:
            table = json.loads(out)["partitiontable"]
        except (ValueError, KeyError):
            return None
        return [p.get("name", "") for p in table.get("partitions", [])]

    def check_tools(self, disk: DiskSpec) -> None:
        """Refuse to start without the tools the layout needs.

        A busybox ``blkid`` that does not understand ``-p`` would make every disk look
        blank, and a re-run would then reformat it: only util-linux's will do.
        """
        tools = list(TOOLS) + (list(LVM_TOOLS) if disk.layout == "lvm" else [])
        missing = [t for t in tools if self.run(["sh", "-c", 'command -v "$1"', "_", t])[0]]
        code, out = self.run(["blkid", "--version"])
        if "blkid" not in missing and (code != 0 or "util-linux" not in out):
            missing.append("blkid (util-linux, not busybox)")
        if missing:
            raise DiskError(
                f"missing {', '.join(missing)}; install util-linux, fdisk, dosfstools, "
                "e2fsprogs" + (" and lvm2" if disk.layout == "lvm" else "")
            )

    def exists(self, path: str) -> bool:
        """True when ``path`` exists on the machine."""
        return self.run(["test", "-e", path])[0] == 0

    def resolve(self, path: str) -> str:
        """The kernel device behind ``path`` (a /dev/disk/by-id link resolves to /dev/sdX)."""
        code, out = self.run(["readlink", "-f", path])
        return out.strip() if code == 0 and out.strip() else path

    def _wait_for(self, device: str, parts: list[str]) -> None:
        """Wait (bounded) until the kernel shows the new partitions' device nodes."""
        deadline = time.monotonic() + self.settle_seconds
        while not all(self.exists(p) for p in parts):
            if time.monotonic() > deadline:
                raise DiskError(f"partitions {parts} did not appear; is {device} busy?")
            self.run(["partx", "-u", device])
            time.sleep(0.2)

    def _must(self, argv: list[str], stdin: str | None = None) -> None:
        code, out = self.run(argv, stdin)
        if code != 0:
            raise DiskError(f"`{' '.join(argv)}` failed: {out.strip()}")

    def prepare(self, disk: DiskSpec, wipe: bool = False) -> list[str]:
        """Bring the disk to the layout; returns what was done ([] = already right)."""
        self.check_tools(disk)
        if not self.exists(disk.path):
            raise DiskError(f"{disk.path} does not exist on this machine; fix the spec")
        device = self.resolve(disk.path)
        names, volumes = layout(disk, device)
        current = self.partition_names(device)
        done: list[str] = []
        if current != names:
            whole = self.fstype(device)
            if (current or whole) and not wipe:
                what = f"partitions {current}" if current else f"a {whole} signature"
                raise DiskError(
                    f"{disk.path} already holds {what}, not the PlasmaCloud layout; "
                    "refusing to wipe it. Check it is the right disk, then re-run with --wipe"
                )
            if current or whole:
                self._must(["wipefs", "-a", device])
                done.append(f"wiped {device}")
            self._must(["sfdisk", "-q", "--wipe", "always", device], sfdisk_script(disk))
            done.append(f"partitioned {device} ({', '.join(names)})")
        if disk.layout == "plain":
            self._wait_for(device, [v.device for v in volumes])
        else:
            self._wait_for(device, [volumes[0].device, _part(device, 2)])
            done += self._lvm(_part(device, 2), disk)
        for vol in volumes:
            if self.fstype(vol.device) == vol.fstype:
                continue
            if vol.fstype == "vfat":
                self._must(["mkfs.vfat", "-F", "32", "-n", vol.name, vol.device])
            else:
                self._must(["mkfs.ext4", "-q", "-F", "-L", vol.name, vol.device])
            done.append(f"formatted {vol.device} ({vol.fstype})")
        return done

    def _lvm(self, pv: str, disk: DiskSpec) -> list[str]:
        done = []
        if self.fstype(pv) != "LVM2_member":
            self._must(["pvcreate", "-ff", "-y", pv])
            done.append(f"pvcreate {pv}")
        if self.run(["vgs", VG])[0] != 0:
            self._must(["vgcreate", VG, pv])
            done.append(f"vgcreate {VG}")
        for lv, size in (("root", ["-L", disk.root_size]), ("data", ["-l", "100%FREE"])):
            if self.run(["lvs", f"{VG}/{lv}"])[0] != 0:
                self._must(["lvcreate", "-y", *size, "-n", lv, VG])
                done.append(f"lvcreate {VG}/{lv}")
        return done + self.activate()

    def activate(self) -> list[str]:
        """Activate the volume group's logical volumes when their device nodes are missing.

        After a reboot nothing activates them in an installer without udev rules, and
        an LV without its /dev node would look unformatted: activation must come before
        any filesystem check, or a re-run could format an earlier install's data.
        """
        lvs = [f"/dev/{VG}/{lv}" for lv in ("root", "data")]
        if all(self.exists(p) for p in lvs):
            return []
        self._must(["vgchange", "-ay", VG])
        missing = [p for p in lvs if not self.exists(p)]
        if missing:
            raise DiskError(f"vgchange -ay {VG} left no {', '.join(missing)}")
        return [f"activated volume group {VG}"]


def mount_points(disk: DiskSpec, device: str) -> list[tuple[Volume, Path]]:
    """Where each filesystem mounts under the target root, parents first."""
    mounts = {"root": Path("."), "ESP": Path("boot"), "data": Path("var/lib/plasmacloud")}
    _, volumes = layout(disk, device)
    order = ["root", "ESP", "data"]
    return [(v, mounts[v.name]) for v in sorted(volumes, key=lambda v: order.index(v.name))]
