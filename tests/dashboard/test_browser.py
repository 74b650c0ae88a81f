"""The dashboard in a real browser (Debian's headless chromium through selenium) against a
running process lab: log in with the printed URL, see node01-03 and one leader per Raft
group, kill a node and watch its rows turn red, and meet only the login page without the
session cookie. Screenshots of what it saw go to docs/images/ (docs/dashboard.md)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from plasmacloud.lab.control import Lab

from .conftest import Served

pytestmark = pytest.mark.slow

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
# generous: the page polls every 1.5 s, but this machine may be busy with other tests
WAIT_S = 30.0
NODES = ["node01", "node02", "node03"]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver must be installed (scripts/setup.sh)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield browser
    finally:
        browser.quit()


def _rows(browser: webdriver.Chrome) -> dict[tuple[str, str], dict[str, str]]:
    """(node, service) -> the row's state attributes, as the page shows them now."""
    found = {}
    for tr in browser.find_elements(By.CSS_SELECTOR, "tr[data-node]"):
        key = (tr.get_attribute("data-node") or "", tr.get_attribute("data-service") or "")
        found[key] = {
            "up": tr.get_attribute("data-up") or "",
            "role": tr.get_attribute("data-role") or "",
            "class": tr.get_attribute("class") or "",
        }
    return found


def _leaders(rows: dict[tuple[str, str], dict[str, str]], service: str) -> list[str]:
    return [n for (n, s), r in rows.items() if s == service and r["role"] == "leader"]


def _one_leader_each(browser: webdriver.Chrome) -> bool:
    rows = _rows(browser)
    return (
        len(rows) == 9
        and all(len(_leaders(rows, s)) == 1 for s in ("chainfire", "flaredb"))
        and all(r["up"] == "true" for r in rows.values())
    )


def test_log_in_see_the_cluster_watch_a_node_die(
    full_lab: Lab, served: Served, browser: webdriver.Chrome
) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.25)

    browser.get(served.login_url)
    assert browser.current_url == served.base + "/"  # the token left the address bar
    wait.until(_one_leader_each)
    rows = _rows(browser)
    assert sorted({n for n, _s in rows}) == NODES
    assert sorted({s for _n, s in rows}) == ["chainfire", "flaredb", "iam"]
    browser.save_screenshot(str(IMAGES / "dashboard-overview.png"))

    # kill a node that leads neither group, so the others keep serving meanwhile
    leaders = {*_leaders(rows, "chainfire"), *_leaders(rows, "flaredb")}
    victim = next(n for n in NODES if n not in leaders)
    full_lab.backend.kill_node(victim)
    wait.until(
        lambda b: all(
            r["up"] == "false" and "down" in r["class"]
            for (n, _s), r in _rows(b).items()
            if n == victim
        )
    )
    rows = _rows(browser)
    assert [n for (n, _s), r in rows.items() if r["up"] == "false"] == [victim] * 3
    red = browser.find_element(By.CSS_SELECTOR, f'tr[data-node="{victim}"]')
    assert red.value_of_css_property("background-color") == "rgba(253, 226, 225, 1)"
    browser.save_screenshot(str(IMAGES / "dashboard-node-down.png"))

    # the same browser without its session cookie: the login page, no data
    browser.delete_all_cookies()
    for path in ("/", "/api/overview.json"):
        browser.get(served.base + path)
        assert browser.find_elements(By.ID, "login-needed")
        assert "node01" not in browser.page_source
    browser.get(served.login_url)  # the printed URL worked once
    assert browser.find_elements(By.ID, "login-needed")
    browser.save_screenshot(str(IMAGES / "dashboard-login.png"))
