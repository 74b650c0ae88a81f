"""Netboot HTTP server on 127.0.0.1: known/unknown MACs, images, bundles, state machine."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from plasmacloud.provision.bundle import ConfigBundle
from plasmacloud.provision.dnsmasq import DnsmasqOptions, dnsmasq_conf, prepare_tftp
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.netboot import create_app, state_path
from plasmacloud.provision.spec import ClusterSpec, parse_spec
from plasmacloud.provision.states import TRANSITIONS, State, StateStore, load_states
from plasmacloud.provision.status_view import settled

from .helpers import run_plasma

MAC1 = "52-54-00-00-01-01"


def _spec(tree: Path) -> ClusterSpec:
    return parse_spec((tree / "cluster.yaml").read_text())[0]


@pytest.fixture
async def client(tree: Path) -> AsyncIterator[TestClient]:
    images = tree / "images"
    (images / "node02").mkdir(parents=True)
    (images / "kernel").write_bytes(b"KERNEL")
    (images / "initrd").write_bytes(b"INITRD")
    (images / "node02" / "kernel").write_bytes(b"KERNEL2")
    (images / "cmdline").write_text("init=/nix/store/x-nixos/init\n")
    app = create_app(_spec(tree), OutputLayout(tree / "out"), images)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def _report(c: TestClient, node: str, **body: object) -> tuple[int, dict[str, object]]:
    body.setdefault("mac", "52:54:00:00:01:0" + node[-1])
    resp = await c.post(f"/api/v1/nodes/{node}/report", json=body)
    return resp.status, await resp.json()


async def test_chain_script_points_at_per_mac_scripts(client: TestClient) -> None:
    resp = await client.get("/ipxe/boot.ipxe")
    text = await resp.text()
    assert resp.status == 200 and text.startswith("#!ipxe")
    assert "chain http://192.168.100.1:8080/ipxe/${mac:hexhyp}.ipxe" in text


async def test_known_mac_gets_its_script_and_starts_booting(client: TestClient, tree: Path) -> None:
    resp = await client.get(f"/ipxe/{MAC1}.ipxe")
    text = await resp.text()
    assert "plasmacloud.node=node01" in text and "/boot/node01/kernel" in text
    assert "init=/nix/store/x-nixos/init" in text
    states = load_states(state_path(OutputLayout(tree / "out")))
    assert states.nodes["node01"].state == State.BOOTING
    assert states.nodes["node02"].state == State.UNKNOWN


async def test_unknown_mac_is_refused_and_logged(
    client: TestClient, tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="plasmacloud.netboot"):
        resp = await client.get("/ipxe/52-54-00-00-09-09.ipxe")
    text = await resp.text()
    assert resp.status == 200 and "not in cluster.yaml" in text and "poweroff" in text
    assert "refusing unknown machine 52:54:00:00:09:09" in caplog.text
    assert "52:54:00:00:09:09" in load_states(state_path(OutputLayout(tree / "out"))).unknown_macs
    assert (await client.get("/ipxe/nonsense.ipxe")).status == 404


async def test_images_shared_and_per_node(client: TestClient) -> None:
    assert await (await client.get("/boot/node01/kernel")).read() == b"KERNEL"
    assert await (await client.get("/boot/node02/kernel")).read() == b"KERNEL2"
    assert await (await client.get("/boot/node02/initrd")).read() == b"INITRD"
    assert (await client.get("/boot/node09/kernel")).status == 404
    assert (await client.get("/boot/node01/rootfs")).status == 404


async def test_config_bundle_only_while_installing(client: TestClient) -> None:
    assert (await client.get(f"/config/{MAC1}")).status == 403  # never booted
    assert (await client.get("/config/52-54-00-00-09-09")).status == 404
    await client.get(f"/ipxe/{MAC1}.ipxe")
    resp = await client.get(f"/config/{MAC1}")
    assert resp.status == 200
    bundle = ConfigBundle.model_validate(await resp.json())
    files = {f.path: f for f in bundle.files}
    assert files["/etc/nixos/secrets/node01.key"].mode == 0o400
    assert files["/etc/nixos/secrets/ca.crt"].mode == 0o644
    assert b'"node_id": "node01"' in files["/etc/nixos/secrets/cluster-config.json"].content
    assert "/etc/nixos/disko.nix" in files
    assert bundle.hosts["node03"] == "192.168.100.13" and bundle.prefixlen == 24
    for step, state in (("partition", "installing"), ("install", "installed")):
        assert (await _report(client, "node01", step=step, state=state))[0] == 200
    assert (await client.get(f"/config/{MAC1}")).status == 200  # an agent re-run
    assert (await _report(client, "node01", step="join", state="joined"))[0] == 200
    assert (await client.get(f"/config/{MAC1}")).status == 403  # joined: key not served


async def test_state_machine_through_agent_reports(client: TestClient, tree: Path) -> None:
    await client.get(f"/ipxe/{MAC1}.ipxe")
    code, body = await _report(client, "node01", step="install", state="joined")
    assert code == 409 and "booting to joined" in str(body["error"])
    for step, state in (("partition", "installing"), ("install", "installed"), ("join", "joined")):
        code, body = await _report(client, "node01", step=step, state=state)
        assert code == 200 and body["state"] == state
    code, body = await _report(client, "node01", step="health", status="failed", message="boom")
    assert code == 200 and body["state"] == "failed" and body["error"] == "boom"
    assert (await _report(client, "node01", step="x", mac="52:54:00:00:01:02"))[0] == 403
    assert (await _report(client, "node09", step="x"))[0] == 404
    assert (await client.post("/api/v1/nodes/node01/report", data="nope")).status == 400
    nodes = (await (await client.get("/api/v1/nodes")).json())["nodes"]
    assert [e["state"] for e in nodes["node01"]["events"]] == [
        "booting",
        "installing",
        "installed",
        "joined",
        "failed",
    ]
    # Persisted: `plasma provision status` reads the same file without the server.
    code, output = run_plasma("provision", "status", "-o", str(tree / "out"), "--json")
    assert code == 0 and json.loads(output)["nodes"]["node01"]["state"] == "failed"
    code, output = run_plasma("provision", "status", "-o", str(tree / "out"))
    assert "node01" in output and "failed" in output and "boom" in output


def test_every_state_can_fail_and_failed_can_retry() -> None:
    assert all(State.FAILED in allowed for allowed in TRANSITIONS.values())
    assert State.BOOTING in TRANSITIONS[State.FAILED]
    assert State.JOINED not in TRANSITIONS[State.BOOTING]


@pytest.mark.parametrize("mode", ["full", "proxy"])
def test_dnsmasq_config_passes_dnsmasq_test(tree: Path, tmp_path: Path, mode: str) -> None:
    text = dnsmasq_conf(
        _spec(tree), DnsmasqOptions(mode=mode, interface="plasmatest0", enable_ra=True)
    )
    assert "interface=plasmatest0\nbind-interfaces" in text
    assert "dhcp-match=set:ipxe,175" in text and "enable-ra" in text
    if mode == "full":
        assert "dhcp-host=52:54:00:00:01:02,192.168.100.12,node02,infinite" in text
        assert "dhcp-ignore=tag:!known" in text
    else:
        assert "dhcp-range=192.168.100.0,proxy,255.255.255.0" in text
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(text)
    proc = subprocess.run(
        ["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    conf.write_text(text + "dhcp-boot=tag:\n bogus\n")
    bad = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True, timeout=30)
    assert bad.returncode != 0


def test_prepare_tftp_copies_loaders_and_reports_missing(tmp_path: Path) -> None:
    src = tmp_path / "usr-lib-ipxe"
    src.mkdir()
    (src / "undionly.kpxe").write_bytes(b"PXE")
    tftp = tmp_path / "tftp"
    assert prepare_tftp(tftp, (src,)) == ["ipxe.efi"]
    assert (tftp / "undionly.kpxe").read_bytes() == b"PXE"
    (src / "ipxe.efi").write_bytes(b"EFI")
    assert prepare_tftp(tftp, (src,)) == []


def test_status_watch_stops_when_settled(tree: Path) -> None:
    out = OutputLayout(tree / "out")
    store = StateStore(state_path(out), {n.node_id: n.mac for n in _spec(tree).nodes})
    for node in ("node01", "node02", "node03"):
        store.transition(node, State.BOOTING)
        store.transition(node, State.FAILED if node == "node03" else State.INSTALLING)
    assert not settled(load_states(state_path(out)))
    # Unsettled: --watch keeps polling until its timeout (bounded), printing each time.
    code, output = run_plasma(
        "provision",
        "status",
        "-o",
        str(out.root),
        "--watch",
        "--interval",
        "0.1",
        "--timeout",
        "0.3",
    )
    assert code == 0 and output.count("NODE") >= 2
    for node in ("node01", "node02"):
        store.transition(node, State.INSTALLED)
        store.transition(node, State.JOINED)
    assert settled(load_states(state_path(out)))
    code, output = run_plasma("provision", "status", "-o", str(out.root), "--watch")
    assert code == 0 and output.count("NODE") == 1  # settled: one table, no waiting


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_netboot_serve_cli_on_loopback(tree: Path) -> None:
    """The real command in its own process group; stopped by SIGTERM, cleaned up always."""
    port = _free_port()
    argv = [sys.executable, "-c", "from plasmacloud.cli import app; app()", "netboot", "serve"]
    argv += ["-s", str(tree / "cluster.yaml"), "-o", str(tree / "out")]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/ipxe/{MAC1}.ipxe"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    text = resp.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert "plasmacloud.node=node01" in text
        code, output = run_plasma(
            "provision", "status", "-o", str(tree / "out"), "--server", f"http://127.0.0.1:{port}"
        )
        assert code == 0 and "booting" in output
        proc.terminate()
        assert proc.wait(timeout=20) == 0
        assert (
            proc.stderr is not None
            and "node01 (52:54:00:00:01:01) is booting" in proc.stderr.read()
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
