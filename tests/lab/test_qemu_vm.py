"""A real VM PXE-boots from our netboot server over the lab network and is installed by
the first-boot agent; a machine not in the spec is refused; teardown leaves nothing.

Under TCG on a shared 2-core machine this takes minutes (image build once per source
change, ~10 s to the installer's userspace, then the agent's Python start-up)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from plasmacloud.lab import qemu_net
from plasmacloud.lab.qemu import QemuBackend
from plasmacloud.lab.qemu_proc import Proc, wait_for
from plasmacloud.provision.states import State

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1200)]
STRAY_MAC = "52:54:00:00:09:99"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[QemuBackend]:
    # node01 only (the 3-VM run is the e2e test); SSH forwards off so fixed host ports
    # never collide with a developer's lab.
    backend = QemuBackend(tmp_path / "lab", nodes=["node01"], ssh=False)
    try:
        yield backend
    finally:
        backend.down()


def test_one_vm_pxe_boots_installs_and_a_stranger_is_refused(lab: QemuBackend) -> None:
    lab.up()
    stray = lab.boot("stray", STRAY_MAC)
    status = lab.wait_installed("node01", timeout=900)

    # The whole path shows in the node's history: iPXE fetched its per-MAC script, the
    # agent reported each step, and the disk was laid out per the rendered layout.
    states = [e.state for e in status.events]
    assert states[0] == State.BOOTING and status.events[0].step == "ipxe"
    assert State.INSTALLING in states and states[-1] == State.INSTALLED
    steps = {e.step for e in status.events}
    assert {"fetch", "disks", "mount", "files", "identity"} <= steps
    serial = lab.paths.serial("node01").read_text(errors="replace")
    assert "plasmacloud-init: dhcp ok" in serial
    assert "pvcreate /dev/vda2" in serial

    # The stranger got a lease from the pool, asked for its own script and was refused
    # (Debian's iPXE has no `poweroff`, so it keeps asking; it never gets an image).
    wait_for(lambda: STRAY_MAC in lab.provisioning().unknown_macs, 300, "the refusal", 1.0)
    assert stray.proc.alive()
    assert set(lab.provisioning().nodes) == {"node01", "node02", "node03"}
    netboot_log = lab.paths.log("netboot").read_text()
    assert "refusing unknown machine 52:54:00:00:09:99" in netboot_log
    assert "/boot/stray" not in netboot_log and "/config/52:54:00:00:09:99" not in netboot_log

    recorded: list[Proc] = [*lab.state.infra, *(v.proc for v in lab.state.vms)]
    assert {p.role for p in recorded} >= {"switch", "dnsmasq", "netboot", "vm:node01"}
    lab.down()
    assert not any(p.alive() for p in recorded)
    assert qemu_net.leftovers(lab.names) == []
    assert not qemu_net.namespace_exists(lab.names.namespace)
