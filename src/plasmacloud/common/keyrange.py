"""etcd key-range arithmetic: Chainfire's store and clients, IAM's store and its names of
key ranges all use it."""

from __future__ import annotations


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix`` (etcd's GetPrefixRangeEnd)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"  # the prefix was all 0xff (or empty): every key from it on


def common_prefix(a: bytes, b: bytes) -> bytes:
    """The longest shared leading bytes of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]
