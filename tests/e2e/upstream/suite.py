"""Fetch a client library's own test suite from PyPI and run it in a venv of its own.

Nothing upstream is committed here: each pinned sdist is downloaded at test time with
its sha256 required (a changed upload fails loudly), unpacked into a cache directory
and reused by later runs. The suite runs in a separate venv holding the test
dependencies the library itself pins, so its pins never fight ours, and reports
through junitxml.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "plasmacloud" / "upstream"
PIP_TIMEOUT_S = 600

Outcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Suite:
    """One pinned sdist whose tests are run, and what its venv needs to run them."""

    name: str  # PyPI project name
    version: str
    sha256: str  # of the sdist
    requirements: tuple[str, ...]  # exact pins installed into the suite's venv

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    message: str  # first line of the failure or skip reason; empty if passed
    text: str = ""  # the whole failure report


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise builds of one cache entry across concurrent test processes."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """Build into a sibling dir, then rename: only a complete entry gets the final name."""
    with _locked(final.name):
        if not final.exists():
            building = final.with_name(final.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir(parents=True)
            build(building)
            building.rename(final)
    return final


def _pip(python: Path | str, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        timeout=PIP_TIMEOUT_S,
    )


def source(suite: Suite) -> Path:
    """The unpacked sdist (downloaded once, hash checked by pip's --require-hashes)."""

    def build(into: Path) -> None:
        pins = into / "requirements.txt"
        pins.write_text(f"{suite.name}=={suite.version} --hash=sha256:{suite.sha256}\n")
        download = into / "download"
        _pip(
            sys.executable,
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--require-hashes",
            "-r",
            str(pins),
            "-d",
            str(download),
        )
        (sdist,) = download.glob("*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(into, filter="data")

    root = _build_once(CACHE / f"{suite.key}-src", build)
    (unpacked,) = (p for p in root.iterdir() if p.is_dir() and p.name != "download")
    return unpacked


def venv_python(suite: Suite) -> Path:
    """Python of the suite's own venv with its pinned test dependencies (built once per
    set of pins)."""

    def build(into: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(into)], check=True)
        _pip(into / "bin" / "python", "install", *suite.requirements)

    pins = hashlib.sha256("\n".join(suite.requirements).encode()).hexdigest()[:12]
    return _build_once(CACHE / f"{suite.key}-venv-{pins}", build) / "bin" / "python"


def run(
    suite: Suite,
    tests: list[str],
    env: Mapping[str, str],
    report: Path,
    timeout: float,
    extra_path: Path | None = None,
) -> dict[str, Result]:
    """Run the suite's pytest on ``tests`` (paths inside the sdist), return test id -> result.

    The library is imported from the unpacked sdist (it ships its generated code), so the
    venv holds only the test dependencies; ``extra_path`` goes on PYTHONPATH after it.
    """
    root = source(suite)
    subprocess.run(
        [
            str(venv_python(suite)),
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={report}",
            *tests,
        ],
        cwd=root,
        env={**os.environ, **env, "PYTHONPATH": ":".join(str(p) for p in (root, extra_path) if p)},
        timeout=timeout,
        check=False,  # failures are the data; a missing report below is the error
    )
    return parse_junit(report)


def parse_junit(report: Path) -> dict[str, Result]:
    """test id (``module::name``) -> outcome and first line of its message."""
    results: dict[str, Result] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        results[test_id] = Result("passed", "")
        outcomes: tuple[tuple[str, Outcome], ...] = (
            ("failure", "failed"),
            ("error", "failed"),
            ("skipped", "skipped"),
        )
        for tag, outcome in outcomes:
            found = case.find(tag)
            if found is not None:
                message = (found.get("message") or found.text or "").strip()
                first = message.splitlines()[0] if message else ""
                results[test_id] = Result(outcome, first, f"{message}\n{found.text or ''}")
    return results
