"""``plasma netboot serve``: the HTTP side of netbooting (aiohttp).

Answers only machines in the spec, matched by MAC (like Matchbox / Tinkerbell's Smee):

- ``GET /ipxe/boot.ipxe``            chain-loader (dnsmasq hands this URL to iPXE)
- ``GET /ipxe/<mac-hyphens>.ipxe``   the node's script; unknown MACs get a refusal
- ``GET /boot/<node>/kernel|initrd`` the install image (``<images>/<node>/`` or ``<images>/``)
- ``GET /config/<mac>``              the node's config bundle (while it is being installed)
- ``POST /api/v1/nodes/<node>/report`` agent step reports and state changes
- ``GET /api/v1/nodes``              every node's provisioning state
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ValidationError

from plasmacloud.provision import ipxe
from plasmacloud.provision.bundle import make_bundle
from plasmacloud.provision.dnsmasq import DnsmasqOptions, dnsmasq_conf, prepare_tftp
from plasmacloud.provision.layout import OutputLayout
from plasmacloud.provision.spec import ClusterSpec, NodeSpec
from plasmacloud.provision.states import State, StateStore, TransitionError

log = logging.getLogger("plasmacloud.netboot")
STATE_FILE = "netboot-state.json"
_MAC_HYP = re.compile(r"^[0-9a-fA-F]{2}(-[0-9a-fA-F]{2}){5}$")
# The bundle holds the node's private key: hand it out only while the node is being
# installed (an agent re-run after "installed" included), never to a joined node.
BUNDLE_STATES = {State.BOOTING, State.INSTALLING, State.INSTALLED, State.FAILED}


class Report(BaseModel):
    """What the agent posts after each step."""

    mac: str
    step: str
    status: str = "ok"  # "running" | "ok" | "failed"
    state: State | None = None
    message: str = ""


@dataclass
class Netboot:
    """The server's view: spec, rendered tree, images and node states."""

    spec: ClusterSpec
    out: OutputLayout
    images: Path | None
    store: StateStore

    def by_mac(self, mac: str) -> NodeSpec | None:
        mac = mac.lower().replace("-", ":")
        return next((n for n in self.spec.nodes if n.mac == mac), None)


NETBOOT_KEY = web.AppKey("netboot", Netboot)


def state_path(out: OutputLayout) -> Path:
    """Where the netboot server keeps node states."""
    return out.root / STATE_FILE


def create_app(spec: ClusterSpec, out: OutputLayout, images: Path | None) -> web.Application:
    """The aiohttp application (bind it with ``web.AppRunner`` / ``web.run_app``)."""
    store = StateStore(state_path(out), {n.node_id: n.mac for n in spec.nodes})
    nb = Netboot(spec, out, images, store)
    app = web.Application()
    app[NETBOOT_KEY] = nb
    app.router.add_get("/ipxe/{name}", _ipxe)
    app.router.add_get("/boot/{node}/{artifact}", _artifact)
    app.router.add_get("/config/{mac}", _config)
    app.router.add_get("/api/v1/nodes", _nodes)
    app.router.add_post("/api/v1/nodes/{node}/report", _report)
    app.router.add_get("/healthz", _health)
    return app


def _nb(request: web.Request) -> Netboot:
    return request.app[NETBOOT_KEY]


def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain")


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _ipxe(request: web.Request) -> web.Response:
    nb = _nb(request)
    name = request.match_info["name"]
    if name == ipxe.BOOT_SCRIPT:
        return _text(ipxe.chain_script(nb.spec))
    mac = name.removesuffix(".ipxe")
    if not _MAC_HYP.match(mac):
        return _text(f"no such script {name}\n", 404)
    node = nb.by_mac(mac)
    if node is None:
        pretty = mac.lower().replace("-", ":")
        log.warning("netboot: refusing unknown machine %s from %s", pretty, request.remote)
        nb.store.saw_unknown(pretty)
        return _text(ipxe.unknown_script(pretty))
    try:
        nb.store.transition(node.node_id, State.BOOTING, step="ipxe", message="fetched iPXE script")
    except TransitionError as exc:
        log.warning("netboot: %s", exc)
    log.info("netboot: %s (%s) is booting", node.node_id, node.mac)
    return _text(ipxe.node_script(nb.spec, node, _extra_args(nb, node)))


def _image_file(nb: Netboot, node: NodeSpec, name: str) -> Path | None:
    if nb.images is None:
        return None
    for candidate in (nb.images / node.node_id / name, nb.images / name):
        if candidate.is_file():
            return candidate
    return None


def _extra_args(nb: Netboot, node: NodeSpec) -> str:
    """Kernel arguments the image needs (e.g. NixOS's ``init=``), from ``<images>/cmdline``."""
    path = _image_file(nb, node, "cmdline")
    return path.read_text().strip() if path else ""


async def _artifact(request: web.Request) -> web.StreamResponse:
    nb = _nb(request)
    artifact = request.match_info["artifact"]
    try:
        node = nb.spec.node(request.match_info["node"])
    except KeyError:
        return _text("unknown node\n", 404)
    if artifact not in ("kernel", "initrd"):
        return _text(f"no artifact {artifact}; kernel or initrd\n", 404)
    path = _image_file(nb, node, artifact)
    if path is None:
        return _text(
            f"no {artifact} image for {node.node_id}; put it in <images>/{artifact} "
            f"or <images>/{node.node_id}/{artifact}\n",
            404,
        )
    return web.FileResponse(path)


async def _config(request: web.Request) -> web.Response:
    nb = _nb(request)
    node = nb.by_mac(request.match_info["mac"])
    if node is None:
        return web.json_response({"error": "unknown machine"}, status=404)
    state = nb.store.get(node.node_id).state
    if state not in BUNDLE_STATES:
        return web.json_response(
            {
                "error": f"{node.node_id} is {state}; the bundle is served only while booting "
                "or installing (PXE-boot it again to reinstall)"
            },
            status=403,
        )
    try:
        bundle = make_bundle(nb.spec, nb.out, node)
    except FileNotFoundError as exc:
        return web.json_response(
            {"error": f"{exc.filename} missing: run `plasma render` and `plasma pki init`"},
            status=503,
        )
    return web.json_response(bundle.model_dump(mode="json"))


async def _nodes(request: web.Request) -> web.Response:
    return web.json_response(_nb(request).store.data.model_dump(mode="json"))


async def _report(request: web.Request) -> web.Response:
    nb = _nb(request)
    node_id = request.match_info["node"]
    try:
        node = nb.spec.node(node_id)
        report = Report.model_validate(await request.json())
    except KeyError:
        return web.json_response({"error": f"unknown node {node_id}"}, status=404)
    except (ValidationError, ValueError) as exc:
        return web.json_response({"error": f"bad report: {exc}"}, status=400)
    if report.mac.lower().replace("-", ":") != node.mac:
        return web.json_response({"error": f"{report.mac} is not {node_id}'s MAC"}, status=403)
    current = nb.store.get(node_id).state
    to = State.FAILED if report.status == "failed" else (report.state or current)
    try:
        status = nb.store.transition(node_id, to, report.step, report.status, report.message)
    except TransitionError as exc:
        return web.json_response({"error": str(exc)}, status=409)
    log.info("netboot: %s %s %s -> %s", node_id, report.step, report.status, status.state)
    return web.json_response(status.model_dump(mode="json"))


async def serve(
    spec: ClusterSpec,
    out: OutputLayout,
    images: Path | None,
    host: str,
    port: int,
    dnsmasq: DnsmasqOptions | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve HTTP on ``host:port`` (and run dnsmasq when asked) until ``stop`` is set."""
    stop = stop or asyncio.Event()
    runner = web.AppRunner(create_app(spec, out, images))
    await runner.setup()
    proc: asyncio.subprocess.Process | None = None
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("netboot: serving %s on http://%s:%d", spec.name, host, port)
        if dnsmasq is not None:
            missing = prepare_tftp(dnsmasq.tftp_root)
            if missing:
                log.warning(
                    "netboot: %s missing from %s: PXE firmware cannot chain to iPXE "
                    "(apt-get install ipxe, or copy them there)",
                    ", ".join(missing),
                    dnsmasq.tftp_root,
                )
            conf = out.root / "netboot" / "dnsmasq.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(dnsmasq_conf(spec, dnsmasq))
            dnsmasq.state_dir.mkdir(parents=True, exist_ok=True)
            proc = await asyncio.create_subprocess_exec(
                "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}"
            )
            log.info("netboot: dnsmasq pid %d with %s", proc.pid, conf)
        await stop.wait()
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()  # only the dnsmasq this function started
            await proc.wait()
        await runner.cleanup()
