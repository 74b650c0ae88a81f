"""etcd key-range arithmetic shared by the store client and the enforcement library."""

from __future__ import annotations


def prefix_end(prefix: bytes) -> bytes:
    """etcd's ``range_end`` for "every key starting with ``prefix``"."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\x00"  # all keys


def common_prefix(a: bytes, b: bytes) -> bytes:
    """The longest shared leading bytes of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]
