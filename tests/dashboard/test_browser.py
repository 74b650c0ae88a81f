"""The dashboard in a real browser (Debian's headless chromium through selenium).

Against a running process lab: log in with the printed URL, see node01-03 and one leader
per Raft group, find a validation report and a chaos run as the CLI left them, the
certificates, then kill a node and watch its rows turn red, and meet only the login page
without the session cookie. Against a provisioned cluster's render tree: watch a node's
provisioning state change while the page is open, then log out. Screenshots of what it
saw go to $PLASMA_SCREENSHOTS (see tests/dashboard_browser.py). The QEMU lab's
provisioning walk in the browser is part of tests/lab/test_qemu_cluster.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_browser import (
    Served,
    all_up_one_leader_each,
    chromium,
    data,
    leaders_in,
    overview_rows,
    plasma,
    provisioning_states,
    running_command,
    shot,
    until,
)
from selenium import webdriver
from selenium.webdriver.common.by import By

from plasmacloud.lab.control import Lab
from plasmacloud.provision.netboot import STATE_FILE
from plasmacloud.provision.states import State, StateStore

pytestmark = pytest.mark.slow

NODES = ["node01", "node02", "node03"]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as browser:
        yield browser


def test_a_lab_in_the_browser(full_lab: Lab, served: Served, browser: webdriver.Chrome) -> None:
    lab_dir = str(full_lab.layout.root)
    browser.get(served.login_url)
    assert browser.current_url == served.base + "/"  # the token left the address bar
    until(browser, all_up_one_leader_each)
    rows = overview_rows(browser)
    assert sorted({n for n, _s in rows}) == NODES
    assert sorted({s for _n, s in rows}) == ["chainfire", "flaredb", "iam"]
    shot(browser, "overview")

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
    until(browser, lambda b: len(data(b, "tr[data-run]")) == 2)
    classes = {r["run"]: r["class"] for r in data(browser, "tr[data-run]")}
    assert classes == {
        "validation": "up" if validate.returncode == 0 else "down",
        "chaos": "up" if chaos.returncode == 0 else "down",
    }
    checks = data(browser, "tr[data-check]")  # the latest report, check by check
    assert {"health", "chainfire.leader", "flaredb.crud"} <= {c["check"] for c in checks}
    assert all(c["class"] == "up" for c in checks) is (validate.returncode == 0)
    shot(browser, "runs")

    browser.get(served.base + "/pki")
    until(browser, lambda b: data(b, "tr[data-file]"))
    status = {r["file"]: r["status"] for r in data(browser, "tr[data-file]")}
    assert {f"{n}.crt" for n in NODES} | {"ca.crt", "operator.crt"} <= set(status)
    assert set(status.values()) == {"ok"}
    shot(browser, "pki")

    # kill a node that leads neither group (chaos restarted nodes: read the page again)
    browser.get(served.base + "/")
    until(browser, all_up_one_leader_each)
    # the chaos run's writes show in the charts (sampled since the dashboard started)
    charts = data(browser, "tr[data-chart-node]")
    assert sorted((c["chartService"], c["chartNode"]) for c in charts) == sorted(
        (s, n) for s in ("chainfire", "flaredb") for n in NODES
    )
    assert max(float(c["peak"]) for c in charts if c["chartService"] == "chainfire") > 0
    rows = overview_rows(browser)
    leaders = {*leaders_in(rows, "chainfire"), *leaders_in(rows, "flaredb")}
    victim = next(n for n in NODES if n not in leaders)
    full_lab.backend.kill_node(victim)
    until(
        browser,
        lambda b: all(
            r["up"] == "false" and "down" in r["class"]
            for (n, _s), r in overview_rows(b).items()
            if n == victim
        ),
    )
    rows = overview_rows(browser)
    assert [n for (n, _s), r in rows.items() if r["up"] == "false"] == [victim] * 3
    # and its charts stop at a gap instead of showing its last rate as the current one
    until(
        browser,
        lambda b: {c["now"] for c in data(b, f'tr[data-chart-node="{victim}"]')} == {""},
    )
    red = browser.execute_script(  # in one call: the table is redrawn every poll
        "return getComputedStyle(document.querySelector(arguments[0])).backgroundColor;",
        f'tr[data-node="{victim}"]',
    )
    assert red == "rgb(253, 226, 225)"
    shot(browser, "node-down")

    # the same browser without its session cookie: the login page, no data
    browser.delete_all_cookies()
    for path in ("/", "/api/overview.json", "/pki"):
        browser.get(served.base + path)
        assert browser.find_elements(By.ID, "login-needed")
        assert "node01" not in browser.page_source
    browser.get(served.login_url)  # the printed URL worked once
    assert browser.find_elements(By.ID, "login-needed")
    shot(browser, "login")


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

        until(
            browser,
            lambda b: (
                provisioning_states(b)
                == {"node01": "joined", "node02": "failed", "node03": "installed"}
            ),
        )
        store.transition("node03", State.JOINED, step="join")  # the page is not reloaded
        until(browser, lambda b: provisioning_states(b)["node03"] == "joined")
        shot(browser, "provisioning")
        browser.get(served.base + "/pki")
        until(browser, lambda b: b.find_elements(By.XPATH, "//h2[text()='Preflight findings']"))
        shot(browser, "pki-provisioned")

        # logging out: the button posts the page's CSRF token; then only the login page
        browser.find_element(By.CSS_SELECTOR, "#logout button").click()
        until(browser, lambda b: b.find_elements(By.ID, "login-needed"))
        assert browser.current_url == served.base + "/login"
        for path in ("/provisioning", "/api/provisioning.json"):
            browser.get(served.base + path)
            assert browser.find_elements(By.ID, "login-needed")
            assert "node01" not in browser.page_source
