"""Chainfire with its client port in frontend worker processes (``--frontends 2``) on the
lab as `plasma lab up` runs it (IAM, auth on): callers are known by their token or
certificate exactly as without workers, a worker that dies is replaced while clients
keep writing, and workers never outlive their member.

(etcd's answers through workers, field by field: test_etcd_differential's "frontends".)
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from plasmacloud.chainfire.frontend.protocol import STREAM_WINDOW
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.chainfire.proto import rpc_pb2_grpc
from plasmacloud.cluster.probe import client_target, dial
from plasmacloud.lab.pids import children, cmdline
from plasmacloud.lab.services import CHAINFIRE, SERVICES

from .conftest import member_metrics, with_flags
from .test_iam_lab import (
    ALICE_PW,
    DENIED,
    IamLab,
    client_cert,
    password_token,
    put_answer,
    put_as,
    started_iam_lab,
)

pytestmark = pytest.mark.slow

WORKERS = 2
FRONTEND_SERVICES = tuple(
    with_flags(s, "--frontends", str(WORKERS)) if s.name == CHAINFIRE.name else s for s in SERVICES
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamLab]:
    with started_iam_lab(tmp_path_factory.mktemp("frontends"), services=FRONTEND_SERVICES) as s:
        yield s


def member_pid(lab: IamLab, node: str) -> int:
    for svc in lab.lab.backend.node_status(node).services:
        if svc.service == CHAINFIRE.name and svc.pid is not None:
            return svc.pid
    raise AssertionError(f"{node} runs no chainfire")


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


async def test_callers_are_known_through_the_workers(lab: IamLab, tmp_path: Path) -> None:
    urls = lab.iam_urls()
    token = await password_token(urls, lab.lab.layout.ca_file, "alice", ALICE_PW)
    for node in range(3):
        assert await put_as(lab, node, b"app/fe", token) == grpc.StatusCode.OK
    assert await put_as(lab, 1, b"app/fe", "not-a-token") == grpc.StatusCode.UNAUTHENTICATED
    assert await put_answer(lab, 1, b"other/x", token) == DENIED
    cfg = lab.lab.configs()[1]
    # no token: the certificate's CN is the caller (the operator is an admin; a CN naming
    # nobody is refused as etcd refuses a CN that is no user)
    async with dial(client_target(cfg), lab.tls) as ch:
        got = await rpc_pb2_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"app/fe"))
    assert [kv.value for kv in got.kvs] == [b"v"]
    stranger = client_cert(lab, tmp_path, "stranger")
    async with dial(client_target(cfg), stranger) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as nobody:
            await rpc_pb2_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"app/fe"))
    assert nobody.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_each_member_runs_its_workers_behind_a_private_socket(lab: IamLab) -> None:
    for cfg in lab.lab.configs():
        assert len(children(member_pid(lab, cfg.node_id))) == WORKERS
        sock = cfg.data_path("chainfire") / "frontend.sock"
        mode = sock.stat().st_mode
        assert stat.S_ISSOCK(mode) and mode & 0o777 == 0o600, oct(mode)


async def test_a_watch_streams_more_than_its_window_in_order(lab: IamLab) -> None:
    """A streamed response goes at most STREAM_WINDOW replies ahead of its client; the
    worker grants more as its client reads, so a long watch gets every event, in order."""
    cfg = lab.lab.configs()[1]
    count = 3 * STREAM_WINDOW
    create = pb.WatchRequest(
        create_request=pb.WatchCreateRequest(key=b"app/w/", range_end=b"app/w0")
    )
    async with dial(client_target(cfg), lab.tls) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        requests: asyncio.Queue[pb.WatchRequest | None] = asyncio.Queue()
        requests.put_nowait(create)

        async def outgoing() -> AsyncIterator[pb.WatchRequest]:
            while (req := await requests.get()) is not None:
                yield req

        call = rpc_pb2_grpc.WatchStub(ch).Watch(outgoing())
        assert (await call.read()).created
        for i in range(count):  # one put, one WatchResponse: one REPLY frame each
            await kv.Put(pb.PutRequest(key=b"app/w/%04d" % i, value=b"v"), timeout=10)
        seen: list[bytes] = []
        async with asyncio.timeout(60):
            while len(seen) < count:
                seen += [e.kv.key for e in (await call.read()).events]
        requests.put_nowait(None)
        call.cancel()
    assert seen == [b"app/w/%04d" % i for i in range(count)]


async def test_a_killed_worker_is_replaced_while_clients_write(lab: IamLab) -> None:
    node = lab.lab.configs()[0].node_id
    pid = member_pid(lab, node)
    victim = children(pid)[0]
    cfg = lab.lab.configs()[0]
    written, failures = 0, set()
    async with dial(client_target(cfg), lab.tls) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                await kv.Put(pb.PutRequest(key=b"app/k%d" % written, value=b"v"), timeout=5)
                written += 1
            except grpc.aio.AioRpcError as exc:  # on the killed worker's connection
                failures.add(exc.code())
                await asyncio.sleep(0.1)
            now = children(pid)
            if victim not in now and len(now) == WORKERS and written >= 50:
                break
        else:
            raise AssertionError(f"worker not replaced: {children(pid)} (killed {victim})")
        got = await kv.Range(pb.RangeRequest(key=b"app/k", range_end=b"app/l", count_only=True))
    assert got.count >= written > 0  # every acknowledged put is there
    # what a client retries (etcd's clients do) until it reconnects to a live worker
    assert failures <= {grpc.StatusCode.UNAVAILABLE}, failures
    metrics = member_metrics(cfg)
    assert metrics["chainfire_frontend_workers"] == WORKERS
    assert metrics["chainfire_frontend_restarts_total"] >= 1


def test_workers_exit_with_their_member(lab: IamLab) -> None:
    node = lab.lab.configs()[2].node_id
    pid = member_pid(lab, node)
    workers = children(pid)
    assert len(workers) == WORKERS
    os.kill(pid, signal.SIGKILL)  # no chance to stop them: they see the socket close
    wait_for(lambda: all(cmdline(w) is None for w in workers), 20, f"workers {workers} gone")
