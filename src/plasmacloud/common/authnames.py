"""Names of what IAM policies govern in the services: the vocabulary IAM's policies and
the services' guards share.

Actions are ``chainfire:<RPC>`` on ``key/<key>`` (RPCs about the whole cluster on
``cluster``) and ``flaredb:Query`` / ``flaredb:Execute`` on ``db/<name>``.
"""

from __future__ import annotations

from plasmacloud.common.keyrange import common_prefix, prefix_end

CHAINFIRE_ACTIONS = (
    "Range",
    "Put",
    "DeleteRange",
    "Txn",
    "Compact",
    "Watch",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseKeepAlive",
    "LeaseTimeToLive",
    "LeaseLeases",
    "MemberList",
    "MemberAdd",
    "MemberRemove",
    "Status",
    "Hash",
    "Snapshot",
)
FLAREDB_ACTIONS = ("Query", "Execute")
CLUSTER_RESOURCE = "cluster"


def chainfire_action(rpc: str) -> str:
    """``Put`` -> ``chainfire:Put``."""
    return f"chainfire:{rpc}"


def chainfire_resource(key: bytes | str) -> str:
    """``b"app/x"`` -> ``key/app/x`` (non-UTF-8 bytes are escaped, never dropped)."""
    text = key.decode("utf-8", errors="backslashreplace") if isinstance(key, bytes) else key
    return f"key/{text}"


def chainfire_range(key: bytes, range_end: bytes = b"") -> tuple[str, bool]:
    """The resource an etcd request on ``[key, range_end)`` needs, and whether it is a prefix.

    A single key is ``key/<key>``. A prefix range (``etcdctl get --prefix app/``) is the
    prefix ``key/app/``: authorize it with ``prefix=True`` so an Allow must cover every
    key in it and a Deny on any key in it refuses it. Other intervals are widened to their
    common prefix (``range_end=b"\\0"``, "from key on", to everything), which can only
    make a decision stricter, never looser.
    """
    if not range_end:
        return chainfire_resource(key), False
    if range_end == prefix_end(key):
        return chainfire_resource(key), True
    if range_end == b"\x00":
        return chainfire_resource(b""), True
    return chainfire_resource(common_prefix(key, range_end)), True


def flaredb_action(kind: str) -> str:
    """``Query`` or ``Execute`` -> ``flaredb:Query`` / ``flaredb:Execute``."""
    return f"flaredb:{kind}"


def flaredb_resource(db: str = "main") -> str:
    """``main`` -> ``db/main``."""
    return f"db/{db}"
