"""The dashboard in a real browser (Debian's headless chromium through selenium).

Against a running process lab: log in with the printed URL, see node01-03 and one leader
per Raft group, find a validation report and a chaos run as the CLI left them, the
certificates, then kill a node and watch its rows turn red, and meet only the login page
without the session cookie. Against a provisioned cluster's render tree: watch a node's
provisioning state change while the page is open. Screenshots of what it saw go to
$PLASMA_SCREENSHOTS: set it to docs/images to refresh the ones docs/dashboard.md shows
(by default a temporary directory, so a test run leaves the tree as it was)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from plasmacloud.lab.control import Lab
from plasmacloud.provision.netboot import STATE_FILE
from plasmacloud.provision.states import State, StateStore

from .conftest import Served, plasma, running_command

pytestmark = pytest.mark.slow

IMAGES = Path(
    os.environ.get("PLASMA_SCREENSHOTS") or Path(tempfile.gettempdir()) / "plasma-dashboard"
)
# generous: the page polls every 1.5 s, but this machine may be busy with other tests
WAIT_S = 30.0
NODES = ["node01", "node02", "node03"]
Rows = dict[tuple[str, str], dict[str, str]]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver must be installed (scripts/setup.sh)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield browser
    finally:
        browser.quit()


def _until(browser: webdriver.Chrome, ready: Callable[[webdriver.Chrome], object]) -> None:
    WebDriverWait(browser, WAIT_S, poll_frequency=0.25).until(ready)


def _shot(browser: webdriver.Chrome, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(IMAGES / f"dashboard-{name}.png"))


def _data(browser: webdriver.Chrome, selector: str) -> list[dict[str, str]]:
    """The data attributes (and class) of the elements ``selector`` matches, read in one
    go: the page replaces its table on every poll, element handles go stale."""
    found: list[dict[str, str]] = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map((e) => ({...e.dataset, class: e.className}));",
        selector,
    )
    return found


def _rows(browser: webdriver.Chrome) -> Rows:
    """(node, service) -> the overview row's state attributes, as the page shows them now."""
    return {(r["node"], r["service"]): r for r in _data(browser, "tr[data-service]")}


def _leaders(rows: Rows, service: str) -> list[str]:
    return [n for (n, s), r in rows.items() if s == service and r["role"] == "leader"]


def _all_up_one_leader_each(browser: webdriver.Chrome) -> bool:
    rows = _rows(browser)
    return (
        len(rows) == 9
        and all(r["up"] == "true" for r in rows.values())
        and all(len(_leaders(rows, s)) == 1 for s in ("chainfire", "flaredb"))
    )


def test_a_lab_in_the_browser(full_lab: Lab, served: Served, browser: webdriver.Chrome) -> None:
    lab_dir = str(full_lab.layout.root)
    browser.get(served.login_url)
    assert browser.current_url == served.base + "/"  # the token left the address bar
    _until(browser, _all_up_one_leader_each)
    rows = _rows(browser)
    assert sorted({n for n, _s in rows}) == NODES
    assert sorted({s for _n, s in rows}) == ["chainfire", "flaredb", "iam"]
    _shot(browser, "overview")

    # what the CLI leaves in the lab shows on the runs page, passed or failed as it said
    validate = subprocess.run(
        plasma("lab", "validate", "--dir", lab_dir), capture_output=True, timeout=300
    )
    chaos = subprocess.run(
        plasma("lab", "chaos", "--dir", lab_dir, "--duration", "3s", "--faults", "kill"),
        capture_output=True,
        timeout=300,
    )
    browser.get(served.base + "/runs")
    _until(browser, lambda b: len(_data(b, "tr[data-run]")) == 2)
    classes = {r["run"]: r["class"] for r in _data(browser, "tr[data-run]")}
    assert classes == {
        "validation": "up" if validate.returncode == 0 else "down",
        "chaos": "up" if chaos.returncode == 0 else "down",
    }
    checks = _data(browser, "tr[data-check]")  # the latest report, check by check
    assert {"health", "chainfire.leader", "flaredb.crud"} <= {c["check"] for c in checks}
    assert all(c["class"] == "up" for c in checks) is (validate.returncode == 0)
    _shot(browser, "runs")

    browser.get(served.base + "/pki")
    _until(browser, lambda b: _data(b, "tr[data-file]"))
    status = {r["file"]: r["status"] for r in _data(browser, "tr[data-file]")}
    assert {f"{n}.crt" for n in NODES} | {"ca.crt", "operator.crt"} <= set(status)
    assert set(status.values()) == {"ok"}
    _shot(browser, "pki")

    # kill a node that leads neither group (chaos restarted nodes: read the page again)
    browser.get(served.base + "/")
    _until(browser, _all_up_one_leader_each)
    # the chaos run's writes show in the charts (sampled since the dashboard started)
    charts = _data(browser, "tr[data-chart-node]")
    assert sorted((c["chartService"], c["chartNode"]) for c in charts) == sorted(
        (s, n) for s in ("chainfire", "flaredb") for n in NODES
    )
    assert max(float(c["peak"]) for c in charts if c["chartService"] == "chainfire") > 0
    rows = _rows(browser)
    leaders = {*_leaders(rows, "chainfire"), *_leaders(rows, "flaredb")}
    victim = next(n for n in NODES if n not in leaders)
    full_lab.backend.kill_node(victim)
    _until(
        browser,
        lambda b: all(
            r["up"] == "false" and "down" in r["class"]
            for (n, _s), r in _rows(b).items()
            if n == victim
        ),
    )
    rows = _rows(browser)
    assert [n for (n, _s), r in rows.items() if r["up"] == "false"] == [victim] * 3
    # and its charts stop at a gap instead of showing its last rate as the current one
    _until(
        browser,
        lambda b: {c["now"] for c in _data(b, f'tr[data-chart-node="{victim}"]')} == {""},
    )
    red = browser.execute_script(  # in one call: the table is redrawn every poll
        "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor;",
        f'tr[data-node="{victim}"]',
    )
    assert red == "rgb(253, 226, 225)"
    _shot(browser, "node-down")

    # the same browser without its session cookie: the login page, no data
    browser.delete_all_cookies()
    for path in ("/", "/api/overview.json", "/pki"):
        browser.get(served.base + path)
        assert browser.find_elements(By.ID, "login-needed")
        assert "node01" not in browser.page_source
    browser.get(served.login_url)  # the printed URL worked once
    assert browser.find_elements(By.ID, "login-needed")
    _shot(browser, "login")


def test_provisioning_states_change_while_the_page_is_open(
    render_tree: tuple[Path, Path], browser: webdriver.Chrome
) -> None:
    spec, out = render_tree
    macs = {f"node0{i}": f"52:54:00:00:00:0{i}" for i in (1, 2, 3)}
    store = StateStore(out / STATE_FILE, macs)
    walk = [(State.BOOTING, None), (State.INSTALLING, "disk"), (State.INSTALLED, None)]
    for node in NODES:
        for to, step in walk:
            store.transition(node, to, step=step)
    store.transition("node01", State.JOINED, step="join")
    store.transition("node02", State.FAILED, step="join", message="chainfire did not answer")

    with running_command("dashboard", "--spec", str(spec), "--out", str(out)) as served:
        browser.get(served.login_url)
        browser.get(served.base + "/provisioning")

        def states(b: webdriver.Chrome) -> dict[str, str]:
            return {r["node"]: r["state"] for r in _data(b, "tr[data-state]")}

        _until(
            browser,
            lambda b: states(b) == {"node01": "joined", "node02": "failed", "node03": "installed"},
        )
        store.transition("node03", State.JOINED, step="join")  # the page is not reloaded
        _until(browser, lambda b: states(b)["node03"] == "joined")
        _shot(browser, "provisioning")
        browser.get(served.base + "/pki")
        _until(browser, lambda b: b.find_elements(By.XPATH, "//h2[text()='Preflight findings']"))
        _shot(browser, "pki-provisioned")
