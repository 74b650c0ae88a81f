"""`plasma dashboard --dir QEMU_LAB`, without VMs: the command binds its socket on this
host's loopback (where the browser is) and re-runs itself inside the lab namespace (the
only place the VMs' addresses exist) serving on that socket; the provisioning page reads
the lab's netboot state file, the overview probes the VMs from inside. (The VMs walking
through their states in a browser: tests/lab/test_qemu_cluster.py.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dashboard_browser import plasma, running_command
from lab.qemu_lab import prepared_qemu_lab

from plasmacloud.common.errors import EXIT_UNAVAILABLE
from plasmacloud.lab import qemu_net
from plasmacloud.lab.pids import cmdline
from plasmacloud.lab.qemu import QemuBackend
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.netboot import state_path
from plasmacloud.provision.spec import load_spec
from plasmacloud.provision.states import State, StateStore

pytestmark = pytest.mark.slow


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[QemuBackend]:
    """A QEMU lab's directory as `lab up` leaves it, no VM and (yet) no namespace."""
    backend = prepared_qemu_lab(tmp_path / "lab")
    try:
        yield backend
    finally:
        backend.down()  # the namespace, if a test made it


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc


def _dashboards_in(namespace: str) -> list[str]:
    """The command lines of the ``plasma dashboard`` processes in ``namespace``."""
    pids = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
    ).stdout.split()
    argvs = [cmdline(int(pid)) for pid in pids]  # None: gone since it was listed
    return [line for argv in argvs if argv and " dashboard " in (line := " ".join(argv))]


async def test_the_dashboard_of_a_qemu_lab_serves_here_and_probes_inside(
    lab: QemuBackend,
) -> None:
    nodes = {n.node_id: n.mac for n in load_spec(lab.paths.spec).nodes}
    store = StateStore(state_path(OutputLayout(lab.paths.out)), nodes)
    store.transition("node01", State.BOOTING)
    qemu_net.create_namespace(lab.names)
    root = str(lab.paths.root)
    with running_command("dashboard", "--dir", root) as served:
        [inside] = _dashboards_in(lab.names.namespace)
        assert f"--dir {root} --inside" in inside
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(served.login_url) as page:
                assert page.status == 200  # the socket bound here reached the one inside
            doc = await _get(session, served.base + "/api/provisioning.json")
            assert doc["state_file"] == str(store.path)
            states = {n["node_id"]: n["state"] for n in doc["nodes"]}
            assert states == {"node01": "booting", "node02": "unknown", "node03": "unknown"}
            store.transition("node01", State.INSTALLING, step="disk")
            doc = await _get(session, served.base + "/api/provisioning.json")
            assert doc["nodes"][0]["state"] == "installing"
            # the VMs' addresses, dialled inside: nothing there answers (no VM)
            overview = await _get(session, served.base + "/api/overview.json")
            assert sorted({r["node"] for r in overview["rows"]}) == sorted(nodes)
            assert not any(r["up"] for r in overview["rows"])
            pki = await _get(session, served.base + "/api/pki.json")
            assert "node01/secrets/node01.crt" in {c["file"] for c in pki["certificates"]}


def test_the_dashboard_of_a_qemu_lab_that_is_not_up_says_so(lab: QemuBackend) -> None:
    done = subprocess.run(
        plasma("dashboard", "--dir", str(lab.paths.root)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_UNAVAILABLE
    assert "is not up" in " ".join(done.stderr.split())
    assert done.stdout == ""  # no login URL for a dashboard that does not run
