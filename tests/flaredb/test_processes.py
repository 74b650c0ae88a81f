"""e2e: three `plasma flaredb serve` processes with mTLS on both ports; kill -9 the
leader, restart everything, and check no acknowledged row is lost."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.flaredb.client import Client, OperationalError
from plasmacloud.flaredb.models import ExecuteResult, QueryResult, Statement
from plasmacloud.provision import pki

from .cluster import make_configs

pytestmark = pytest.mark.slow
HOSTS = ("127.0.0.41", "127.0.0.42", "127.0.0.43")
SERVE = [sys.executable, "-c", "from plasmacloud.cli import app; app()", "flaredb", "serve"]
SNAPSHOT_EVERY = 40  # small, so the killed node must catch up from a snapshot


@dataclass
class ProcCluster:
    root: Path
    configs: dict[str, NodeConfig]
    ssl_ctx: ssl.SSLContext
    procs: dict[str, subprocess.Popen[bytes]]

    def url(self, node: str) -> str:
        c = self.configs[node]
        return f"https://{c.ip}:{c.ports.flaredb_http}"

    def client(self, node: str) -> Client:
        return Client(self.url(node), self.ssl_ctx, timeout=10)

    def start(self, node: str) -> None:
        path = self.root / f"{node}.json"
        log = (self.root / f"{node}.log").open("ab")
        self.procs[node] = subprocess.Popen(
            [*SERVE, "--config", str(path), "--snapshot-threshold", str(SNAPSHOT_EVERY)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    def signal(self, node: str, sig: signal.Signals) -> int:
        proc = self.procs.pop(node)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        return proc.wait(15)

    def leader(self, timeout: float = 20.0) -> str:
        """The node all running members name as leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = set()
            for node in self.procs:
                try:
                    seen.add(self.client(node).status()["store"]["leader"]["node_id"])
                except (OperationalError, KeyError, ValueError):
                    seen.add("")
            if len(seen) == 1 and "" not in seen and seen <= set(self.procs):
                return seen.pop()
            time.sleep(0.2)
        logs = {n: (self.root / f"{n}.log").read_text()[-2000:] for n in self.configs}
        raise AssertionError(f"no agreed leader within {timeout}s; logs: {logs}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcCluster]:
    pki_dir = tmp_path / "pki"
    ca = pki.init_ca(pki_dir)
    plain = make_configs(tmp_path, HOSTS)
    configs = {}
    for cfg in plain:
        pki.issue_node(ca, pki_dir, cfg.node_id, [cfg.hostname], [str(cfg.ip)])
        tls = TLSConfig(
            enabled=True,
            ca_file=pki_dir / "ca.crt",
            cert_file=pki_dir / f"{cfg.node_id}.crt",
            key_file=pki_dir / f"{cfg.node_id}.key",
        )
        configs[cfg.node_id] = cfg.model_copy(update={"tls": tls})
        configs[cfg.node_id].dump(tmp_path / f"{cfg.node_id}.json")
    pki.issue_client(ca, pki_dir, "operator")
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    ctx.load_cert_chain(str(pki_dir / "operator.crt"), str(pki_dir / "operator.key"))
    pc = ProcCluster(tmp_path, configs, ctx, {})
    try:
        for node in configs:
            pc.start(node)
        yield pc
    finally:
        for node in list(pc.procs):
            with contextlib.suppress(Exception):
                pc.signal(node, signal.SIGKILL)


def count(c: Client, level: str = "linearizable") -> int:
    (q,) = c.query([Statement("SELECT count(*) FROM t")], level=level)
    assert isinstance(q, QueryResult), q
    return int(q.values[0][0])


def test_kill9_leader_restart_and_nothing_lost(cluster: ProcCluster) -> None:
    leader = cluster.leader()
    nodes = list(cluster.configs)
    follower = next(n for n in nodes if n != leader)
    cluster.client(follower).execute([Statement("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")])
    acked = 0
    for i in range(30):
        (r,) = cluster.client(nodes[i % 3]).execute(
            [Statement("INSERT INTO t(v) VALUES(?)", (f"a{i}",))]
        )
        assert isinstance(r, ExecuteResult) and r.rows_affected == 1
        acked += 1

    # Without a client certificate the API refuses the TLS handshake.
    bare = ssl.create_default_context(cafile=str(cluster.configs[leader].tls.ca_file))
    with pytest.raises(OperationalError):
        Client(cluster.url(leader), bare, timeout=5).execute([Statement("SELECT 1")])

    # CRUD at every consistency level through every node.
    for node in nodes:
        c = cluster.client(node)
        (r,) = c.execute([Statement("UPDATE t SET v = ? WHERE id = 1", (node,))])
        assert isinstance(r, ExecuteResult) and r.rows_affected == 1
        for level in ("none", "weak", "linearizable", "strong"):
            (q,) = c.query([Statement("SELECT v FROM t WHERE id = 1")], level=level)
            assert isinstance(q, QueryResult)
            # `none` may lag on a follower; every other level sees the write just made.
            assert level == "none" or q.values == [[node]], (node, level, q)

    cluster.signal(leader, signal.SIGKILL)
    new = cluster.leader()
    assert new != leader
    for i in range(2 * SNAPSHOT_EVERY):
        (r,) = cluster.client(follower).execute(
            [Statement("INSERT INTO t(v) VALUES(?)", (f"b{i}",))]
        )
        assert isinstance(r, ExecuteResult)
        acked += 1
    assert count(cluster.client(new)) == acked
    assert cluster.client(new).status()["store"]["raft"]["snapshot_index"] > 0
    # A node's own config is enough to reach any member (its cert is the client cert).
    as_node = Client.for_node(cluster.configs[new], follower)
    assert as_node.ready() and len(as_node.nodes()) == 3

    # The killed node comes back and catches up (its log is behind the leader's snapshot).
    cluster.start(leader)
    cluster.leader()
    deadline = time.monotonic() + 20
    while count(cluster.client(leader), "none") != acked and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count(cluster.client(leader), "none") == acked

    # SIGTERM everything (clean exit), start again: every acknowledged row is back.
    for node in nodes:
        assert cluster.signal(node, signal.SIGTERM) == 0
    for node in nodes:
        cluster.start(node)
    cluster.leader()
    for node in nodes:
        assert count(cluster.client(node)) == acked
    dumps = {n: cluster.client(n).backup(sql=True) for n in nodes}
    assert len(set(dumps.values())) == 1
