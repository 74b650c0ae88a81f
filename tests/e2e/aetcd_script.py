"""Runs the PyPI `aetcd` client in its own process: its generated etcd protos register the
same protobuf names as plasmacloud.chainfire.proto, so the two cannot share a process.
Prints one JSON document of what it saw.

Usage: python aetcd_script.py HOST:PORT HOST:PORT   (plain TCP: aetcd 1.0.0 has no TLS)
"""

import asyncio
import json
import sys

import aetcd  # type: ignore[import-untyped]


def client(endpoint: str) -> aetcd.Client:
    host, port = endpoint.rsplit(":", 1)
    return aetcd.Client(host, int(port), timeout=10)


async def main(first: str, other: str) -> dict[str, object]:
    out: dict[str, object] = {}
    async with client(first) as a, client(other) as c:
        await a.put(b"/ae/one", b"1")
        await a.put(b"/ae/two", b"2")
        out["get"] = (await c.get(b"/ae/one")).value.decode()
        out["prefix"] = [[kv.key.decode(), kv.value.decode()] for kv in await c.get_prefix(b"/ae/")]
        ok, _ = await c.transaction(
            compare=[c.transactions.value(b"/ae/one") == b"1"],
            success=[c.transactions.put(b"/ae/one", b"11")],
            failure=[],
        )
        out["txn"] = [ok, (await a.get(b"/ae/one")).value.decode()]
        lease = await a.lease(60)
        await c.put(b"/ae/leased", b"x", lease=lease.id)
        out["lease_keys"] = [k.decode() for k in await lease.keys()]
        await lease.revoke()
        out["after_revoke"] = await c.get(b"/ae/leased")
        out["deleted"] = (await c.delete(b"/ae/two")).deleted
        out["members"] = sorted([m.name async for m in a.members()])
        status = await c.status()
        out["status"] = {"version": status.version, "leader": status.leader.name}
    return out


print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
