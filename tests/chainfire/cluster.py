"""A real 3-process Chainfire cluster on loopback for tests (``plasma chainfire serve``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from netports import free_port

from plasmacloud.common.config import NodeConfig, PeerConfig, ServicePorts, TLSConfig
from plasmacloud.provision import pki

SERVE = [sys.executable, "-c", "from plasmacloud.cli import app; app()", "chainfire", "serve"]


@dataclass
class Cluster:
    """Configs, certificates and processes of a 3-member cluster under one directory.

    With ``joiners``, the last of ``ips`` are extra nodes that start with
    ``bootstrap: false`` and wait to be added; the founders know them only by hostname
    (through their ``hosts`` map), as after re-rendering for a planned join.
    """

    root: Path
    ips: tuple[str, ...] = ("127.0.0.71", "127.0.0.72", "127.0.0.73")
    tls: bool = True
    serve_args: tuple[str, ...] = ()
    joiners: int = 0
    configs: dict[str, NodeConfig] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        peers = []
        for i, ip in enumerate(self.ips, 1):
            ports = ServicePorts(
                chainfire_client=free_port(ip),
                chainfire_peer=free_port(ip),
                chainfire_metrics=free_port(ip),
            )
            peers.append(
                PeerConfig(
                    node_id=f"node0{i}", hostname=f"node0{i}", ip=IPv4Address(ip), ports=ports
                )
            )
        pki_dir = self.root / "pki"
        ca = pki.init_ca(pki_dir)
        for p in peers:
            pki.issue_node(ca, pki_dir, p.node_id, [p.hostname], [str(p.ip), "127.0.0.1"])
        pki.issue_client(ca, pki_dir, "operator")
        founders = peers[: len(peers) - self.joiners]
        for p in peers:
            joining = p not in founders
            tls = TLSConfig(
                enabled=self.tls,
                ca_file=pki_dir / "ca.crt",
                cert_file=pki_dir / f"{p.node_id}.crt",
                key_file=pki_dir / f"{p.node_id}.key",
            )
            cfg = NodeConfig(
                node_id=p.node_id,
                hostname=p.hostname,
                ip=p.ip,
                peers=peers if joining else founders,
                bootstrap=not joining,
                hosts={} if joining else {j.hostname: j.ip for j in peers if j not in founders},
                ports=p.ports,
                tls=tls,
                data_dir=self.root / p.node_id,
            )
            cfg.dump(self.root / f"{p.node_id}.json")
            self.configs[p.node_id] = cfg

    @property
    def operator_tls(self) -> TLSConfig:
        pki_dir = self.root / "pki"
        return TLSConfig(
            enabled=self.tls,
            ca_file=pki_dir / "ca.crt",
            cert_file=pki_dir / "operator.crt",
            key_file=pki_dir / "operator.key",
        )

    def endpoint(self, node_id: str) -> str:
        cfg = self.configs[node_id]
        return f"{cfg.ip}:{cfg.ports.chainfire_client}"

    def endpoints(self) -> list[str]:
        return [self.endpoint(n) for n in self.founders]

    def start(self, node_id: str) -> None:
        log = open(self.root / f"{node_id}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[node_id] = subprocess.Popen(
            [*SERVE, "--config", str(self.root / f"{node_id}.json"), *self.serve_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def founders(self) -> list[str]:
        return [n for n, cfg in self.configs.items() if cfg.bootstrap]

    def start_all(self) -> None:
        """Start the founding members (joiners are started by the test)."""
        for node_id in self.founders:
            self.start(node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> int:
        """Signal one member and wait for it; returns its exit code."""
        proc = self.procs.pop(node_id)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        return proc.wait(timeout=20)

    def stop_all(self) -> None:
        for node_id in list(self.procs):
            proc = self.procs[node_id]
            try:
                self.kill(node_id, signal.SIGTERM)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def healthy(self, node_id: str) -> bool:
        cfg = self.configs[node_id]
        url = f"http://{cfg.ip}:{cfg.ports.chainfire_metrics}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def wait_healthy(self, node_ids: list[str] | None = None, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        pending = set(node_ids or self.founders)
        while pending and time.monotonic() < deadline:
            pending = {n for n in pending if not self.healthy(n)}
            if pending:
                time.sleep(0.2)
        if pending:
            logs = {n: (self.root / f"{n}.log").read_text()[-2000:] for n in pending}
            raise AssertionError(f"not healthy after {timeout}s: {sorted(pending)}\n{logs}")
