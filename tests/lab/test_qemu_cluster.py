"""The full QEMU lab: three VMs PXE-boot, get installed, run Chainfire, FlareDB and IAM
(auth on), and the whole checklist is green through `plasma lab validate` (IAM's admin
bootstrapped inside the lab namespace, Prometheus scraping every service), all of it
watched on `plasma dashboard --dir LAB` in headless chromium (each node walks through its
provisioning states; the overview then shows the cluster, one leader per group); then all three
are hard-reset by `plasma lab qemu validate --persistence`, boot again without losing their
disks, and every marker (and a key etcdctl wrote before) is still there.

Marked vm + slow; it runs in CI."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_browser import (
    ProvisioningWalk,
    all_up_one_leader_each,
    chromium,
    overview_rows,
    running_command,
    shot,
    until,
)
from selenium import webdriver

from plasmacloud.lab import qemu_net
from plasmacloud.lab.qemu import QemuBackend
from plasmacloud.provision.states import State

from .qemu_lab import plasma, qemu_lab

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(3000)]
NODES = ["node01", "node02", "node03"]
# a first bring-up's provisioning states, in the order the state machine moves through them
WALK = [s.value for s in State if s != State.FAILED]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[QemuBackend]:
    with qemu_lab(tmp_path / "lab") as backend:
        yield backend


CHECKS = [
    "health",
    "chainfire.members",
    "chainfire.leader",
    "chainfire.crud",
    "flaredb.members",
    "flaredb.quorum",
    "flaredb.crud",
    "iam.discovery",
    "iam.tokens",
    "metrics",
    "prometheus",
]


def _validate(lab: QemuBackend, *extra: str) -> dict[str, list[bool]]:
    """The whole checklist, repeated until green (a TCG cluster may still be electing):
    check id -> ok per node of the last run."""
    root = str(lab.paths.root)
    done = plasma("lab", "qemu", "validate", "--dir", root, "--wait", "900", "--json", *extra)
    assert done.stdout.startswith("{"), done.stdout + done.stderr
    report = json.loads(done.stdout)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert done.returncode == 0, json.dumps(failed, indent=1)
    return {c["id"]: [r["ok"] for r in c["nodes"]] for c in report["checks"]}


def _etcdctl(lab: QemuBackend, *args: str) -> str:
    pki = lab.paths.out / "pki" / "clients"
    argv = [
        "etcdctl",
        "--endpoints=https://192.168.100.12:2379",
        f"--cacert={pki / 'ca.crt'}",
        f"--cert={pki / 'admin.crt'}",
        f"--key={pki / 'admin.key'}",
        *args,
    ]
    done = subprocess.run(
        lab.in_namespace(argv),
        capture_output=True,
        text=True,
        timeout=60,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _watched_bring_up(lab: QemuBackend, browser: webdriver.Chrome) -> dict[str, list[bool]]:
    """Wait for the VMs to be installed and the checklist green (which records them
    joined) with `plasma dashboard --dir LAB`'s provisioning page open in ``browser``:
    every node is seen walking through its states in order up to joined; the overview
    then shows node01-03, one leader per Raft group. The checklist's results.

    The dashboard is off while the checklist runs: its metrics scrapes (every 2 s, each
    service of each node) cost the emulated CPUs what the checklist's timeouts need."""
    started = time.monotonic()
    seen: dict[str, list[tuple[str, float]]] = {}
    with running_command("dashboard", "--dir", str(lab.paths.root)) as served:
        browser.get(served.login_url)
        browser.get(served.base + "/provisioning")
        with ProvisioningWalk(browser, "qemu-provisioning-walk", seen, started) as walk:
            for node in NODES:
                lab.wait_installed(node, timeout=1200)
            walk.wait_all_shown(State.INSTALLED, NODES)
    checks = _validate(lab)
    with running_command("dashboard", "--dir", str(lab.paths.root)) as served:
        browser.get(served.login_url)  # a new dashboard, a new login
        browser.get(served.base + "/provisioning")
        with ProvisioningWalk(browser, "qemu-provisioning-walk", seen, started) as walk:
            walk.wait_all_shown(State.JOINED, NODES)
        print("provisioning page, (state, s since the watch began):", walk.seen)
        shot(browser, "qemu-provisioning")
        for node in NODES:
            states = walk.states(node)
            assert set(states) <= set(WALK), walk.seen  # never failed
            order = [WALK.index(s) for s in states]
            assert order == sorted(set(order)), walk.seen  # each state once, in order
            assert len(states) >= 3 and states[-1] == State.JOINED, walk.seen
        browser.get(served.base + "/")
        until(browser, all_up_one_leader_each)
        assert sorted({n for n, _s in overview_rows(browser)}) == NODES
        shot(browser, "qemu-overview")
    return checks


def test_three_vms_pxe_install_validate_and_survive_a_reset(lab: QemuBackend) -> None:
    with chromium() as browser:
        lab.up()
        first = _watched_bring_up(lab, browser)
    assert first == {c: [True, True, True] for c in CHECKS}
    assert lab.paths.admin.exists() and lab.paths.admin.stat().st_mode & 0o777 == 0o600
    # `plasma lab status` finds the qemu lab from its directory and probes it in the namespace
    shown = plasma("lab", "status", "--dir", str(lab.paths.root), "--json", timeout=120)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    status = json.loads(shown.stdout)
    assert status["ready"] is True
    # a ready cluster's installed nodes are recorded as joined, the last provisioning state
    assert [n["provisioning"] for n in status["nodes"]] == ["joined"] * 3

    # etcdctl, from inside the lab namespace, through node02.
    assert _etcdctl(lab, "put", "lab/persist", "before-reset").strip() == "OK"

    # `validate --persistence`: markers through every node, all three VMs
    # hard-reset at once, every marker read back on every node once the cluster is ready.
    again = _validate(lab, "--persistence")
    assert again == first | {"persistence": [True, True, True]}
    for node in NODES:
        # The agent found its own disk layout, activated its volumes and kept them (no
        # repartitioning, no second pvcreate).
        serial = lab.paths.serial(node).read_text(errors="replace")
        first_boot, _, after_reset = serial.rpartition("plasmacloud-init: userspace")
        assert "pvcreate /dev/vda2" in first_boot
        assert "disks: activated volume group pool" in after_reset
        assert "pvcreate" not in after_reset and "formatted" not in after_reset
    assert _etcdctl(lab, "get", "lab/persist").split() == ["lab/persist", "before-reset"]

    lab.down()
    assert qemu_net.leftovers(lab.names) == []
    assert not any(v.proc.alive() for v in lab.state.vms)
