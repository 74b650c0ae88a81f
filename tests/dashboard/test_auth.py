"""The login gate: the printed token works once and only once, it becomes an HttpOnly,
SameSite=Strict session cookie, and nothing but the login page reaches a browser
without that session; a session expires, and a logout (a POST with the session's CSRF
token, from the dashboard's own origin) ends it."""

from __future__ import annotations

import logging
import re

import aiohttp
import pytest

from plasmacloud.dashboard.auth import SESSION_COOKIE, Gate
from plasmacloud.dashboard.server import Sources, bind, is_loopback, login_url, serve

from .conftest import Client, absent_target, client_of

LOGIN_MARK = 'id="login-needed"'


def test_gate_redeems_its_token_once() -> None:
    gate = Gate()
    token = gate.token
    assert gate.redeem("not-" + token) is None
    session = gate.redeem(token)
    assert session and session != token and gate.admits(session)
    assert gate.redeem(token) is None  # used up
    with pytest.raises(RuntimeError):
        _ = gate.token  # nobody needs it any more
    assert not gate.admits(None) and not gate.admits(token)


async def _login(client: Client, token: str) -> aiohttp.ClientResponse:
    return await client.get("/login", params={"token": token}, allow_redirects=False)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_lasts_its_time_and_no_longer() -> None:
    clock = Clock()
    gate = Gate(session_s=60, clock=clock)
    session = gate.redeem(gate.token)
    assert session is not None
    clock.now += 59
    assert gate.admits(session) and gate.csrf(session)
    clock.now += 1
    assert not gate.admits(session)
    with pytest.raises(KeyError):
        gate.csrf(session)
    with pytest.raises(ValueError):
        Gate(session_s=0)


def test_a_session_ends_only_with_its_own_csrf_token() -> None:
    gate = Gate()
    session = gate.redeem(gate.token)
    assert session is not None
    assert not gate.end(session, "guessed") and gate.admits(session)
    assert not gate.end(None, gate.csrf(session))
    assert gate.end(session, gate.csrf(session))
    assert not gate.admits(session)
    assert not gate.end(session, "")  # once


async def _logged_in(client: Client, gate: Gate) -> tuple[str, str]:
    """Log ``client`` in; its session id and the CSRF token its pages carry."""
    resp = await _login(client, gate.token)
    session = resp.cookies[SESSION_COOKIE].value
    page = await (await client.get("/provisioning")).text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return session, found.group(1)


async def test_logout_ends_the_session_and_nothing_else_does(
    dashboard: tuple[Client, Gate],
) -> None:
    client, gate = dashboard
    session, csrf = await _logged_in(client, gate)
    assert csrf == gate.csrf(session) and csrf not in session
    # a forged logout: no token, a wrong one, the right one from another site's page
    forged = [
        ({}, {}),
        ({"csrf": csrf[::-1]}, {}),
        ({"csrf": csrf}, {"Origin": "http://evil.example"}),
        ({"csrf": csrf}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}),
    ]
    for form, headers in forged:
        resp = await client.post("/logout", data=form, headers=headers, allow_redirects=False)
        assert resp.status == 403
        assert gate.admits(session)
    assert (await client.get("/logout")).status == 405  # a link cannot log anyone out

    resp = await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert resp.cookies[SESSION_COOKIE].value == ""  # the browser drops it
    for path in ("/", "/api/overview.json", "/api/provisioning.json"):
        # even a browser that kept the cookie gets the login page and no data
        after = await client.get(path, cookies={SESSION_COOKIE: session})
        body = await after.text()
        assert after.status == 401 and LOGIN_MARK in body
        assert "node01" not in body and csrf not in body
    again = await client.post("/logout", data={"csrf": csrf}, cookies={SESSION_COOKIE: session})
    assert again.status == 401  # no session to end


async def test_an_expired_session_gets_the_login_page() -> None:
    clock = Clock()
    gate = Gate(session_s=3600, clock=clock)
    async with client_of(Sources(absent_target()), gate) as client:
        resp = await _login(client, gate.token)
        assert f"Max-Age={3600}" in resp.headers["Set-Cookie"]  # the browser forgets it too
        assert (await client.get("/api/overview.json")).status == 200
        clock.now += 3600
        expired = await client.get("/api/overview.json")
        body = await expired.text()
        assert expired.status == 401 and LOGIN_MARK in body and "node01" not in body


@pytest.mark.parametrize(
    "path", ["/", "/api/overview.json", "/static/app.js", "/no/such/page", "/login"]
)
async def test_without_a_session_every_path_is_the_login_page(
    dashboard: tuple[Client, Gate], path: str
) -> None:
    client, _gate = dashboard
    resp = await client.get(path)
    body = await resp.text()
    assert resp.status == 401
    assert LOGIN_MARK in body
    assert "node01" not in body and '"rows"' not in body


async def test_the_token_opens_one_session_and_redirects_to_a_url_without_it(
    dashboard: tuple[Client, Gate],
) -> None:
    client, gate = dashboard
    token = gate.token
    assert (await _login(client, token[::-1])).status == 401
    peek = await client.head("/login", params={"token": token}, allow_redirects=False)
    assert peek.status == 401  # a HEAD does not use the token up
    resp = await _login(client, token)
    assert resp.status == 303
    assert resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert token not in cookie

    page = await client.get("/")
    assert page.status == 200
    assert 'data-page="overview"' in await page.text()
    data = await client.get("/api/overview.json")
    assert data.status == 200
    doc = await data.json()
    assert [(r["node"], r["service"], r["up"]) for r in doc["rows"]] == [
        ("node01", "chainfire", False)
    ]

    client.session.cookie_jar.clear()
    again = await _login(client, token)
    assert again.status == 401  # a second browser cannot reuse the printed URL
    assert (await client.get("/api/overview.json")).status == 401


async def test_a_made_up_session_cookie_gets_the_login_page(
    dashboard: tuple[Client, Gate],
) -> None:
    client, _gate = dashboard
    resp = await client.get("/api/overview.json", cookies={SESSION_COOKIE: "guessed"})
    assert resp.status == 401
    assert LOGIN_MARK in await resp.text()


async def test_only_reads_are_served(dashboard: tuple[Client, Gate]) -> None:
    client, gate = dashboard
    assert (await client.post("/login", params={"token": gate.token})).status == 405
    await _login(client, gate.token)
    assert (await client.post("/api/overview.json")).status == 405


async def test_pages_forbid_framing_caching_and_foreign_scripts(
    dashboard: tuple[Client, Gate],
) -> None:
    client, gate = dashboard
    for resp in (await client.get("/"), await _login(client, gate.token), await client.get("/")):
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


async def test_the_access_log_never_shows_the_token(caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate()
    sock = bind("127.0.0.1", 0)
    url = login_url(sock, gate)
    runner = await serve(Sources(absent_target()), sock, gate)
    try:
        with caplog.at_level(logging.INFO, logger="plasmacloud.dashboard"):
            jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies of an IP address too
            async with aiohttp.ClientSession(cookie_jar=jar) as session, session.get(url) as resp:
                assert resp.status == 200  # followed to the overview page
    finally:
        await runner.cleanup()
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("GET /login 303") for m in logged)
    assert any(m.startswith("GET / 200") for m in logged)
    assert not any(gate_token_of(url) in m for m in logged)


def gate_token_of(url: str) -> str:
    return url.split("token=", 1)[1]


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.9.8.7") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.org")
