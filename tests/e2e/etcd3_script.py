"""Runs inside a separate venv with the PyPI `etcd3` client (it needs protobuf<4, which the
project's own grpcio-tools output cannot share); prints one JSON document of what it saw.

Usage: python etcd3_script.py CA CERT KEY HOST:PORT [HOST:PORT ...]
"""

import json
import sys
import threading

import etcd3  # type: ignore[import-not-found]

ca, cert, key, *endpoints = sys.argv[1:]


def client(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return etcd3.client(
        host=host, port=int(port), ca_cert=ca, cert_cert=cert, cert_key=key, timeout=10
    )


clients = [client(e) for e in endpoints]
a, b, c = clients[0], clients[1 % len(clients)], clients[2 % len(clients)]
out = {}

a.put("/py/one", "1")
b.put("/py/two", "2")
value, meta = c.get("/py/one")
out["get"] = value.decode()
out["prefix"] = sorted((v.decode(), m.key.decode()) for v, m in c.get_prefix("/py/"))

ok, _ = b.transaction(
    compare=[b.transactions.value("/py/one") == "1"],
    success=[b.transactions.put("/py/one", "11")],
    failure=[b.transactions.put("/py/one", "never")],
)
out["txn"] = [ok, a.get("/py/one")[0].decode()]

lease = a.lease(60)
b.put("/py/leased", "x", lease=lease)
refreshed = list(c.refresh_lease(lease.id))
out["lease"] = {
    "ttl_granted": lease.granted_ttl,
    "refreshed_ttl": refreshed[0].TTL if refreshed else None,
    "keys": sorted(k.decode() for k in lease.keys),
}
lease.revoke()
out["after_revoke"] = c.get("/py/leased")[0]

events: list[tuple[str, str]] = []
done = threading.Event()


def on_event(resp):
    for ev in resp.events:
        events.append((ev.key.decode(), ev.value.decode()))
    if len(events) >= 2:
        done.set()


watch_id = c.add_watch_prefix_callback("/py/w/", on_event)
a.put("/py/w/1", "first")
b.put("/py/w/2", "second")
done.wait(10)
c.cancel_watch(watch_id)
out["watch"] = events

out["deleted"] = [a.delete("/py/one"), a.delete("/py/one")]
out["members"] = sorted(m.name for m in a.members)
status = b.status()
out["status"] = {"version": status.version, "leader": status.leader.name}
print(json.dumps(out))
