"""IAM's signing keys sealed at rest: nothing in the store opens without the sealing key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plasmacloud.iam.keys import KEYS_PREFIX, KeyRing, SigningKey
from plasmacloud.iam.sealing import (
    SEALING_KEY,
    Sealer,
    SealingError,
    new_sealing_key,
    read_sealing_key,
)
from plasmacloud.iam.store import MemoryStore
from plasmacloud.iam.tokens import Subject, TokenService, TokenSettings
from plasmacloud.provision.pki import init_sealing_key

ALICE = Subject("user:alice", "alice")


def _sealer() -> Sealer:
    return Sealer(os.urandom(32))


async def _stored(store: MemoryStore) -> list[bytes]:
    return [kv.value for kv in await store.range(KEYS_PREFIX)]


async def test_stored_signing_keys_hold_no_private_key_in_clear() -> None:
    store, key = MemoryStore(), os.urandom(32)
    ring = KeyRing(store, token_ttl=900, cache_seconds=0, sealer=Sealer(key))
    svc = TokenService(store, ring, TokenSettings(issuer="https://iam.test"))
    issued = await svc.issue(ALICE, scope="openid")
    await ring.rotate()
    stored = await _stored(store)
    assert len(stored) == 2
    for raw in stored:
        assert b"PRIVATE KEY" not in raw and b"private_pem" not in raw
        assert SigningKey.is_sealed(raw)
    # another node with the same sealing key verifies what this one signed
    other = KeyRing(store, token_ttl=900, cache_seconds=0, sealer=Sealer(key))
    peer = TokenService(store, other, TokenSettings(issuer="https://iam.test"))
    assert (await peer.verify(issued.access_token))["sub"] == "user:alice"


async def test_keys_stored_in_clear_are_sealed_when_first_read() -> None:
    store, sealer = MemoryStore(), _sealer()
    old = KeyRing(store, token_ttl=900, cache_seconds=0)  # an older release: no sealer
    signed_by = (await old.signing_key()).kid
    assert b"PRIVATE KEY" in (await _stored(store))[0]
    ring = KeyRing(store, token_ttl=900, cache_seconds=0, sealer=sealer)
    assert (await ring.signing_key()).kid == signed_by  # the same key goes on signing
    assert all(SigningKey.is_sealed(raw) for raw in await _stored(store))


async def test_a_node_without_or_with_another_sealing_key_is_told_so() -> None:
    store = MemoryStore()
    await KeyRing(store, token_ttl=900, cache_seconds=0, sealer=_sealer()).signing_key()
    with pytest.raises(SealingError, match="no sealing key"):
        await KeyRing(store, token_ttl=900, cache_seconds=0).signing_key()
    with pytest.raises(SealingError, match="same sealing key file"):
        await KeyRing(store, token_ttl=900, cache_seconds=0, sealer=_sealer()).signing_key()


def test_a_sealed_value_is_bound_to_its_name() -> None:
    sealer = _sealer()
    sealed = sealer.seal(b"secret", aad=b"kid-1")
    assert sealer.open(sealed, sealer.key_id, aad=b"kid-1") == b"secret"
    with pytest.raises(SealingError, match="integrity"):
        sealer.open(sealed, sealer.key_id, aad=b"kid-2")  # moved under another kid


def test_the_sealing_key_file_is_created_once_0400_and_checked(tmp_path: Path) -> None:
    path = init_sealing_key(tmp_path)
    assert path.name == SEALING_KEY and path.stat().st_mode & 0o777 == 0o400
    key = read_sealing_key(path)
    assert len(key) == 32
    assert init_sealing_key(tmp_path).read_bytes() == path.read_bytes()  # never replaced
    os.chmod(path, 0o644)
    with pytest.raises(SealingError, match="chmod 0400"):
        read_sealing_key(path)
    bad = tmp_path / "bad.key"
    bad.write_text("not base64!")
    bad.chmod(0o600)
    with pytest.raises(SealingError, match="32 bytes in base64"):
        read_sealing_key(bad)
    with pytest.raises(SealingError, match="plasma pki issue"):
        read_sealing_key(tmp_path / "missing.key")
    assert len(new_sealing_key().strip()) == 44
