"""dnsmasq configuration for netboot: DHCP (full or proxy) + TFTP + iPXE chain-loading.

dnsmasq is bound to exactly one interface (``interface=`` + ``bind-interfaces``) so it
can never answer DHCP on the host's real network, and in full mode it answers only the
MACs pinned in the spec unless a dynamic range is given (like Tinkerbell's Smee).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from plasmacloud.provision.ipxe import BOOT_SCRIPT, base_url
from plasmacloud.provision.spec import ClusterSpec

BIOS_LOADER = "undionly.kpxe"
EFI_LOADER = "ipxe.efi"
# Debian's `ipxe` package installs both loaders here.
IPXE_DIRS = (Path("/usr/lib/ipxe"),)


@dataclass(frozen=True)
class DnsmasqOptions:
    """Host-side choices that are not part of the cluster spec."""

    tftp_root: Path = Path("/var/lib/plasmacloud/tftp")
    state_dir: Path = Path("/run/plasmacloud")
    interface: str | None = None  # overrides spec.netboot.interface
    mode: str | None = None  # "full" | "proxy"; overrides spec.netboot.dhcp
    enable_ra: bool = False  # IPv6 router advertisements on the same interface


def dnsmasq_conf(spec: ClusterSpec, opts: DnsmasqOptions | None = None) -> str:
    """The full ``dnsmasq.conf`` text (checked in tests with ``dnsmasq --test``)."""
    opts = opts or DnsmasqOptions()
    nb, net = spec.netboot, spec.network
    mode = opts.mode or nb.dhcp
    if mode not in ("full", "proxy"):
        raise ValueError(f"dhcp mode {mode!r}; use full or proxy")
    iface = opts.interface or nb.interface
    mask = net.cidr.netmask
    lines = [
        f"# dnsmasq for PlasmaCloud {spec.name} netboot ({mode} DHCP). Generated; do not edit.",
        "# No DNS: nodes resolve peers through networking.hosts and the spec's DNS servers.",
        "port=0",
        "# Listen on this one interface only, never on the host's other networks.",
        f"interface={iface}",
        "bind-interfaces",
        "log-dhcp",
        f"dhcp-leasefile={opts.state_dir / 'dnsmasq.leases'}",
        f"pid-file={opts.state_dir / 'dnsmasq.pid'}",
        "",
    ]
    if mode == "full":
        if nb.dhcp_range:
            lo, hi = nb.dhcp_range
            lines.append(f"dhcp-range={lo},{hi},{mask},12h")
        else:
            # Pinned addresses only; machines not in the spec get no lease at all.
            lines += [f"dhcp-range={net.cidr.network_address},static,{mask},12h"]
            lines.append("dhcp-ignore=tag:!known")
        if net.gateway:
            lines.append(f"dhcp-option=option:router,{net.gateway}")
        if net.dns:
            lines.append("dhcp-option=option:dns-server," + ",".join(map(str, net.dns)))
        lines += [f"dhcp-host={n.mac},{n.ip},{n.host},infinite" for n in spec.nodes]
    else:
        # Beside an existing DHCP server: we add only boot information, no addresses.
        lines.append(f"dhcp-range={net.cidr.network_address},proxy,{mask}")
        lines += [f"dhcp-host={n.mac},set:known" for n in spec.nodes]
    lines += [
        "",
        "# Legacy PXE/UEFI firmware gets iPXE over TFTP; iPXE (option 175) gets the script.",
        "dhcp-match=set:ipxe,175",
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        f"dhcp-boot=tag:ipxe,{base_url(spec)}/ipxe/{BOOT_SCRIPT}",
    ]
    if mode == "full":
        lines += [
            f"dhcp-boot=tag:!ipxe,tag:efi64,{EFI_LOADER},,{nb.server_ip}",
            f"dhcp-boot=tag:!ipxe,tag:!efi64,{BIOS_LOADER},,{nb.server_ip}",
        ]
    else:
        lines += [
            f'pxe-service=tag:!ipxe,x86PC,"PlasmaCloud iPXE",{BIOS_LOADER}',
            f'pxe-service=tag:!ipxe,X86-64_EFI,"PlasmaCloud iPXE",{EFI_LOADER}',
        ]
    lines += ["", "enable-tftp", f"tftp-root={opts.tftp_root}"]
    if opts.enable_ra:
        lines.append("enable-ra")
    return "\n".join(lines) + "\n"


def prepare_tftp(tftp_root: Path, sources: tuple[Path, ...] = IPXE_DIRS) -> list[str]:
    """Put the iPXE loaders into ``tftp_root`` (copied from ``sources`` when missing).

    Returns the loaders still missing, so the caller can say how to get them.
    """
    tftp_root.mkdir(parents=True, exist_ok=True)
    missing = []
    for name in (BIOS_LOADER, EFI_LOADER):
        if (tftp_root / name).is_file():
            continue
        found = next((d / name for d in sources if (d / name).is_file()), None)
        if found is None:
            missing.append(name)
        else:
            shutil.copyfile(found, tftp_root / name)
    return missing
