"""Fixtures shared across test packages: real multi-process labs on scratch loopback ranges."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plasmacloud.lab.control import Lab
from plasmacloud.lab.reference import ETCD
from plasmacloud.lab.services import ServiceSpec
from plasmacloud.lab.spec import scratch_spec

LabFactory = Callable[[tuple[ServiceSpec, ...]], Lab]


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[LabFactory]:
    """Start 3-node mTLS labs (on a random 127.x.y.11-13 with free ports) running the
    given services; every lab started is torn down afterwards, even when the test fails."""
    started: list[Lab] = []

    def make(services: tuple[ServiceSpec, ...]) -> Lab:
        lab = Lab.open(tmp_path / f"lab{len(started)}", scratch_spec(), services=services)
        started.append(lab)
        lab.up()
        return lab

    try:
        yield make
    finally:
        for lab in started:
            lab.down()


@pytest.fixture
def etcd_lab(lab_factory: LabFactory) -> Lab:
    """A running 3-node etcd 3.4 over mTLS: the reference the lab and validation are proven on."""
    assert shutil.which("etcd"), "etcd-server must be installed (scripts/setup.sh)"
    return lab_factory((ETCD,))
