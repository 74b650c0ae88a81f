#!/usr/bin/env python3
"""The per-request cost of IAM enforcement in a service: one ``check_etcd_call``.

What a Chainfire node pays on every call from a token user once the caches are warm: the
token's signature was verified once (an ES256 token signed here, verified through the
Verifier's own path with its JWKS set to the signing key), revocations are fresh, the
user's policies are cached (a static policy source: an admin policy and an application
policy with a Deny). Prints checks/s and CPU microseconds per check; never asserts. Run it
on two checkouts (PYTHONPATH=<tree>/src) to A/B a change.

    python bench/iam_authz.py [--checks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from plasmacloud.iam.authz import Verifier
from plasmacloud.iam.jwtcheck import PublicKey
from plasmacloud.iam.policy import Policy, parse_policy
from plasmacloud.iam.principal import AuditRecord, Principal

ISSUER = "https://iam.bench.invalid"
POLICIES = [
    ("admin", parse_policy({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})),
    (
        "app",
        parse_policy(
            {
                "Statement": [
                    {"Effect": "Allow", "Action": "chainfire:*", "Resource": "key/app/*"},
                    {"Effect": "Deny", "Action": "chainfire:Put", "Resource": "key/app/x/*"},
                ]
            }
        ),
    ),
]


class StaticPolicies:
    async def policies_for(self, principal: Principal) -> list[tuple[str, Policy]]:
        return POLICIES


async def run(checks: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = time.time()
    claims = {"sub": "user:alice", "preferred_username": "alice", "jti": "j1", "iss": ISSUER,
              "aud": "plasmacloud", "iat": now, "exp": now + 3600, "groups": ["ops"]}  # fmt: skip
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
    records: list[AuditRecord] = []
    verifier = Verifier(
        ["https://127.0.0.1:9"], issuer=ISSUER, policy_source=StaticPolicies(),
        audit=records.append, revocation_refresh=1e9,
    )  # fmt: skip
    # warm caches as a serving node has them: its JWKS, a fresh revocation list
    verifier._keys = {"k1": PublicKey("k1", "ES256", key.public_key())}
    verifier._revoked_fetched_at = now
    metadata = [("token", token)]
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(checks):
        verdict = await verifier.check_etcd_call(
            metadata, "Put", [(b"app/k%d" % i, b"")], "127.0.0.1", None
        )
        if verdict.status != "ok":
            raise SystemExit(f"unexpected verdict {verdict}")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    # CPU time per check: what a loaded machine disturbs least
    print(f"{checks / elapsed:,.0f} checks/s, {cpu / checks * 1e6:.1f} us CPU per check "
          f"({len(records)} audit records queued)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20_000)
    asyncio.run(run(parser.parse_args().checks))


if __name__ == "__main__":
    main()
