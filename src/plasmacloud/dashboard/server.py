"""The dashboard's web server: the login gate, the pages and their JSON.

Read-only: only GET (and HEAD) are served, and one POST, the logout, which must carry
the session's CSRF token from a page of the dashboard and come from its own origin.
Pages are one HTML shell each; ``static/app.js`` polls the page's ``/api/<page>.json``
and renders it. Every response forbids caching, framing and referrers, and allows
scripts and styles from this server only.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.dashboard.auth import SESSION_COOKIE, Gate
from plasmacloud.dashboard.metrics import Sampler
from plasmacloud.dashboard.overview import Overview
from plasmacloud.dashboard.pki import CertFindings, pki_doc
from plasmacloud.dashboard.provisioning import provisioning_doc
from plasmacloud.dashboard.runs import Runs

log = logging.getLogger("plasmacloud.dashboard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# page path -> (page name the script renders, title)
PAGES = {
    "/": ("overview", "Overview"),
    "/provisioning": ("provisioning", "Provisioning"),
    "/runs": ("runs", "Validation and chaos runs"),
    "/pki": ("pki", "Certificates"),
}
LOGOUT = ("POST", "/logout")  # the one request that is not a read
# file -> content type; the login page needs the stylesheet before there is a session
ASSETS = {"app.css": "text/css", "app.js": "text/javascript"}
PUBLIC_ASSETS = {"app.css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _asset(name: str) -> str:
    return (resources.files("plasmacloud.dashboard") / "static" / name).read_text()


@dataclass(frozen=True)
class Sources:
    """What the dashboard shows: the running cluster, and the files about it."""

    target: ClusterTarget
    cert_dirs: tuple[Path, ...] = ()  # where its certificates are (``*.crt``)
    cert_findings: CertFindings | None = None  # preflight's certificate checks, if provisioned
    state_file: Path | None = None  # the netboot server's node states
    runs_dir: Path | None = None  # chaos/*.jsonl histories and reports/*.json


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Method, path and status: never the query string, where the login token travels."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.3fs", request.method, request.path, response.status, time)


def login_page(status: int = 401) -> web.Response:
    """The page every request without a session gets: how to log in, and no data."""
    return web.Response(status=status, text=_asset("login.html"), content_type="text/html")


def make_app(sources: Sources, gate: Gate) -> web.Application:
    """The dashboard's routes behind ``gate``."""
    overview = Overview(sources.target)
    runs = Runs(sources.runs_dir)
    sampler = Sampler(sources.target)

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD") and (request.method, request.path) != LOGOUT:
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        public = request.path == "/login" or (
            request.path.startswith("/static/") and request.match_info.get("name") in PUBLIC_ASSETS
        )
        if not public and not gate.admits(request.cookies.get(SESSION_COOKIE)):
            return login_page()
        return await handler(request)

    async def login(request: web.Request) -> web.StreamResponse:
        if request.method != "GET":  # a HEAD (a link preview, say) must not use the token up
            return login_page()
        session = gate.redeem(request.query.get("token", ""))
        if session is None:
            log.warning("login refused: no valid, unused token")
            return login_page()
        # to a URL without the token: it leaves the address bar and the history
        redirect = web.HTTPSeeOther("/")
        redirect.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=int(gate.session_s),  # the browser forgets it when the gate does
            httponly=True,
            samesite="Strict",
            path="/",
        )
        raise redirect

    async def logout(request: web.Request) -> web.StreamResponse:
        # the guard let only a live session through; SameSite=Strict keeps other sites'
        # forms from sending the cookie, the CSRF token (in the page, not the cookie)
        # and the origin check stop what gets past that. (Under no-referrer a browser
        # says Origin "null" even for our own page: Sec-Fetch-Site tells it apart.)
        own = (None, "null", f"{request.scheme}://{request.host}")
        site = request.headers.get("Sec-Fetch-Site", "same-origin")
        same_origin = request.headers.get("Origin") in own and site == "same-origin"
        csrf = (await request.post()).get("csrf")
        ok = same_origin and isinstance(csrf, str)
        if not (ok and gate.end(request.cookies.get(SESSION_COOKIE), str(csrf))):
            log.warning("logout refused: no CSRF token of the session, or another origin")
            raise web.HTTPForbidden(text="logout refused")
        redirect = web.HTTPSeeOther("/login")
        redirect.del_cookie(SESSION_COOKIE, path="/")
        raise redirect

    async def page(request: web.Request) -> web.Response:
        name, title = PAGES[request.path]
        nav = "".join(
            f'<a href="{path}"{" class=current" if p == name else ""}>{t}</a>'
            for path, (p, t) in PAGES.items()
        )
        try:
            csrf = html.escape(gate.csrf(request.cookies[SESSION_COOKIE]))
        except KeyError:  # it expired since the guard looked
            return login_page()
        text = Template(_asset("page.html")).substitute(page=name, title=title, nav=nav, csrf=csrf)
        return web.Response(text=text, content_type="text/html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(text=_asset(name), content_type=ASSETS[name])

    async def overview_json(request: web.Request) -> web.Response:
        return _json(await overview.get())

    async def metrics_json(request: web.Request) -> web.Response:
        return _json(sampler.doc())

    async def provisioning_json(request: web.Request) -> web.Response:
        return _json(provisioning_doc(sources.state_file))

    async def runs_json(request: web.Request) -> web.Response:
        return _json(await runs.get())

    async def pki_json(request: web.Request) -> web.Response:
        doc = await asyncio.to_thread(pki_doc, sources.cert_dirs, sources.cert_findings)
        return _json(doc)

    async def saved(request: web.Request) -> web.StreamResponse:
        path = runs.saved_file(request.match_info["kind"], request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        kind = "application/jsonl" if path.suffix == ".jsonl" else "application/json"
        return web.FileResponse(path, headers={"Content-Type": kind})

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)

    async def sampling(app: web.Application) -> AsyncIterator[None]:
        async with sampler.running():
            yield

    app = web.Application(middlewares=[guard])
    app.cleanup_ctx.append(sampling)
    app.on_response_prepare.append(headers)
    app.router.add_get("/login", login)
    app.router.add_post(LOGOUT[1], logout)
    app.router.add_get("/static/{name}", asset)
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/runs/{kind}/{name}", saved)
    api = {
        "overview": overview_json,
        "metrics": metrics_json,
        "provisioning": provisioning_json,
        "runs": runs_json,
        "pki": pki_json,
    }
    for name, handler in api.items():
        app.router.add_get(f"/api/{name}.json", handler)
    return app


def _json(doc: dict[str, Any]) -> web.Response:
    return web.Response(text=json.dumps(doc), content_type="application/json")


def is_loopback(host: str) -> bool:
    """True if ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), bound before the URL is
    printed so the URL names the real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def login_url(sock: socket.socket, gate: Gate) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/login?token={gate.token}"


async def serve(sources: Sources, sock: socket.socket, gate: Gate) -> web.AppRunner:
    """Start serving on ``sock``; the runner to clean up."""
    runner = web.AppRunner(
        make_app(sources, gate), access_log=log, access_log_class=PathOnlyAccessLogger
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner
