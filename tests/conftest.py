"""Fixtures shared across test packages: real multi-process labs on scratch loopback ranges,
and a Verifier whose certificate identities need no IAM."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from plasmacloud.iam.authz import AuditRecord, IamUnavailable, Principal, Verifier
from plasmacloud.iam.certidentity import CertificateIdentity
from plasmacloud.iam.policy import parse_policy
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


# what the certificate CN "reader" may do: read key/app/* in Chainfire, query FlareDB
READER_POLICY = parse_policy(
    {
        "Statement": [
            {"Effect": "Allow", "Action": "chainfire:Range", "Resource": "key/app/*"},
            {"Effect": "Allow", "Action": "flaredb:Query", "Resource": "db/main"},
        ]
    }
)


class FixedIdentities:
    """Certificate lookups answered without IAM: CN ``reader`` is ``user:reader`` with
    :data:`READER_POLICY`, a lookup of ``offline`` finds IAM unreachable, others nobody."""

    async def resolve(self, common_name: str) -> CertificateIdentity | None:
        if common_name == "offline":
            raise IamUnavailable("no IAM URL answered")
        if common_name != "reader":
            return None
        who = Principal("user:reader", "reader", (), (), "", float("inf"), auth="certificate")
        return CertificateIdentity(who, [("reader", READER_POLICY)])


@pytest.fixture
async def cert_verifier() -> AsyncIterator[tuple[Verifier, list[AuditRecord]]]:
    """A Verifier of cluster node01 with :class:`FixedIdentities` (IAM itself is
    unreachable), and the audit records it makes."""
    audited: list[AuditRecord] = []
    verifier = Verifier(
        ["http://127.0.0.1:9"],
        node_ids=["node01"],
        identity_source=FixedIdentities(),
        audit=audited.append,
    )
    try:
        yield verifier, audited
    finally:
        await verifier.close()
