"""What the dashboard's tests share, here (on pytest's pythonpath) so the QEMU lab's VM
test can look at a lab's dashboard too: ``plasma dashboard`` run as a command, Debian's
headless chromium driven by selenium, and reading what the pages show.

Screenshots go to $PLASMA_SCREENSHOTS: set it to docs/images to refresh the ones
docs/dashboard.md shows (by default a temporary directory, so a test run leaves the tree
as it was)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

IMAGES = Path(
    os.environ.get("PLASMA_SCREENSHOTS") or Path(tempfile.gettempdir()) / "plasma-dashboard"
)
# generous: the page polls every 1.5 s, but this machine may be busy with other tests
WAIT_S = 30.0
Rows = dict[tuple[str, str], dict[str, str]]


def plasma(*args: str) -> list[str]:
    """The argv of ``plasma ARGS`` in this interpreter (the package on its sys.path)."""
    return [sys.executable, "-c", "from plasmacloud.cli import app; app(prog_name='plasma')", *args]


@dataclass(frozen=True)
class Served:
    """A running ``plasma dashboard``: the login URL it printed first, and its base URL."""

    login_url: str
    base: str


@contextmanager
def running_command(*args: str) -> Iterator[Served]:
    """``plasma ARGS``, a command that serves the dashboard, in its own process group
    (with whatever it re-runs in a lab namespace); stopped afterwards."""
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            plasma(*args), stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().strip()  # the login URL comes first
            if not (first.startswith("http://127.0.0.1:") and "/login?token=" in first):
                stderr.seek(0)
                raise AssertionError(f"first line {first!r}; stderr: {stderr.read()}")
            yield Served(first, first.split("/login?", 1)[0])
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """Debian's chromium, headless, through its chromium-driver; quit afterwards."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "chromium and chromium-driver must be installed (scripts/setup.sh)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield browser
    finally:
        browser.quit()


def until(browser: webdriver.Chrome, ready: Callable[[webdriver.Chrome], object]) -> None:
    WebDriverWait(browser, WAIT_S, poll_frequency=0.25).until(ready)


def shot(browser: webdriver.Chrome, name: str) -> Path:
    """Save what the browser shows as ``dashboard-NAME.png``; its path."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"dashboard-{name}.png"
    browser.save_screenshot(str(path))
    return path


def data(browser: webdriver.Chrome, selector: str) -> list[dict[str, str]]:
    """The data attributes (and class) of the elements ``selector`` matches, read in one
    go: the page replaces its table on every poll, element handles go stale."""
    found: list[dict[str, str]] = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map((e) => ({...e.dataset, class: e.className}));",
        selector,
    )
    return found


def overview_rows(browser: webdriver.Chrome) -> Rows:
    """(node, service) -> the overview row's state attributes, as the page shows them now."""
    return {(r["node"], r["service"]): r for r in data(browser, "tr[data-service]")}


def leaders_in(shown: Rows, service: str) -> list[str]:
    return [n for (n, s), r in shown.items() if s == service and r["role"] == "leader"]


def all_up_one_leader_each(browser: webdriver.Chrome) -> bool:
    """The overview shows three nodes' three services up, one leader per Raft group."""
    shown = overview_rows(browser)
    return (
        len(shown) == 9
        and all(r["up"] == "true" for r in shown.values())
        and all(len(leaders_in(shown, s)) == 1 for s in ("chainfire", "flaredb"))
    )


def provisioning_states(browser: webdriver.Chrome) -> dict[str, str]:
    """node -> the state the provisioning page shows for it now."""
    return {r["node"]: r["state"] for r in data(browser, "tr[data-state]")}


class ProvisioningWalk:
    """The provisioning page open in ``browser``, polled in a thread while the ``with``
    block runs (the browser is the thread's until then): node -> the states the page
    showed, each change once, with the seconds since ``started`` (a monotonic time; now
    by default). ``seen``: an earlier watch's, to go on with. The first time a node shows
    ``installing`` the page is saved as the screenshot ``mid_shot``."""

    def __init__(
        self,
        browser: webdriver.Chrome,
        mid_shot: str,
        seen: dict[str, list[tuple[str, float]]] | None = None,
        started: float | None = None,
        every_s: float = 0.5,
    ) -> None:
        self.browser = browser
        self.mid_shot = mid_shot
        self.every_s = every_s
        self.seen: dict[str, list[tuple[str, float]]] = seen if seen is not None else {}
        self._stop = threading.Event()
        self._failed: list[Exception] = []
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._started = time.monotonic() if started is None else started

    def __enter__(self) -> ProvisioningWalk:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_S)
        if self._failed and exc[0] is None:
            raise self._failed[0]

    def states(self, node: str) -> list[str]:
        """What the page showed for ``node`` so far, in order."""
        return [state for state, _t in self.seen.get(node, [])]

    def wait_all_shown(self, state: str, nodes: list[str]) -> None:
        """Until the page shows ``state`` for every one of ``nodes`` (AssertionError
        after WAIT_S)."""
        deadline = time.monotonic() + WAIT_S
        while not all(self.states(n)[-1:] == [state] for n in nodes):
            assert not self._failed, self._failed[0]
            assert time.monotonic() < deadline, f"the page never showed all {state}: {self.seen}"
            time.sleep(self.every_s)

    def _watch(self) -> None:
        shot_taken = any(s[-1][0] != "unknown" for s in self.seen.values())  # a walk goes on
        try:
            while True:
                now = round(time.monotonic() - self._started, 1)
                for node, state in provisioning_states(self.browser).items():
                    seen = self.seen.setdefault(node, [])
                    if not seen or seen[-1][0] != state:
                        seen.append((state, now))
                if not shot_taken and any(s[-1][0] == "installing" for s in self.seen.values()):
                    shot(self.browser, self.mid_shot)
                    shot_taken = True
                if self._stop.wait(self.every_s):
                    return
        except Exception as exc:  # handed to the test's thread
            self._failed.append(exc)
