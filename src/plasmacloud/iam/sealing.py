"""IAM's signing keys sealed at rest with the cluster's sealing key.

The private halves of IAM's signing keys live in Chainfire's system keyspace, which
every member's database and every Raft snapshot carries. Sealed there (AES-256-GCM under
a 32-byte key that only the nodes hold, a file beside their TLS key), a copied
database, snapshot or backup holds no usable signing key. The key id recorded beside
each sealed key (a hash prefix of the sealing key) tells which key to open it with, so
a wrong or missing file is reported as such, not as corrupt data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from plasmacloud.common.config import ConfigError

KEY_BYTES = 32
# the file's name wherever it is kept (beside the CA, in every node's secrets)
SEALING_KEY = "sealing.key"
_NONCE_BYTES = 12


class SealingError(ConfigError):
    """A sealing key file is unusable, or a sealed value does not open with it (a node
    configured with another cluster's key): the node's configuration is what to fix."""


def read_sealing_key(path: Path) -> bytes:
    """The 32-byte key in ``path`` (base64 text, as `plasma pki` writes it, mode 0400 or
    0600); SealingError naming the file and the fix otherwise."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text().strip()
    except OSError as exc:
        raise SealingError(
            f"sealing key {path}: {exc.strerror}; `plasma pki issue` (or `plasma lab up`) writes it"
        ) from None
    if mode & 0o077:
        raise SealingError(
            f"sealing key {path} is mode {mode:04o}; others must not read it: chmod 0400 {path}"
        )
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        raise SealingError(
            f"sealing key {path} must hold {KEY_BYTES} bytes in base64; write a new one with "
            "`plasma pki issue` only on a new cluster (the old one opens the stored keys)"
        )
    return key


def new_sealing_key() -> bytes:
    """The file content of a fresh sealing key."""
    return base64.b64encode(os.urandom(KEY_BYTES)) + b"\n"


class Sealer:
    """Seals and opens values under one sealing key; ``aad`` binds a value to its name."""

    def __init__(self, key: bytes) -> None:
        # imported here: the file name above is wanted by commands that never seal
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"plasmacloud sealing key id\0" + key).hexdigest()[:16]

    def seal(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext, aad)).decode()

    def open(self, sealed: str, key_id: str, aad: bytes) -> bytes:
        if key_id != self.key_id:
            raise SealingError(
                f"a signing key is sealed with sealing key {key_id}, this node has "
                f"{self.key_id}: give every IAM node the same sealing key file"
            )
        from cryptography.exceptions import InvalidTag

        raw = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise SealingError("a sealed signing key failed its integrity check") from None
