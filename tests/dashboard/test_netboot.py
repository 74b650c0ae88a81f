"""`plasma netboot serve --dashboard`: the dashboard beside the netboot server, its login
URL printed first, showing a machine start booting when it fetches its iPXE script."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dashboard_browser import running_command

from plasmacloud.provision.spec import load_spec

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _states(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(base + "/api/provisioning.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    return {n["node_id"]: n["state"] for n in doc["nodes"]}


async def test_the_dashboard_beside_netboot_sees_a_machine_boot(
    render_tree: tuple[Path, Path],
) -> None:
    spec, out = render_tree
    port = _free_port()
    argv = ["netboot", "serve", "-s", str(spec), "-o", str(out), "--host", "127.0.0.1"]
    with running_command(*argv, "--port", str(port), "--dashboard") as served:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(served.login_url) as page:
                assert page.status == 200
            assert set((await _states(session, served.base)).values()) == {"unknown"}

            node01 = next(n for n in load_spec(spec).nodes if n.node_id == "node01")
            script = f"http://127.0.0.1:{port}/ipxe/{node01.mac.replace(':', '-')}.ipxe"
            with urllib.request.urlopen(script, timeout=30) as resp:
                assert "plasmacloud.node=node01" in resp.read().decode()
            states = await _states(session, served.base)
            assert states["node01"] == "booting"
            assert {s for n, s in states.items() if n != "node01"} == {"unknown"}
