"""plasmacloud.system.v1.SystemKV: the system keyspace, for the cluster's own members.

Only a caller whose verified mTLS client certificate CN is a member's node id may call
it (IAM runs on every node with that node's certificate); anyone else, admin or not,
token or not, gets PERMISSION_DENIED. The check is made here, not by the etcd
authorizer: no IAM policy can grant this service, as no etcd role reaches etcd's auth
bucket through KV. On a client port without TLS there is no identity to check, and the
service is as open as the rest of that port (a development cluster).

Reads are linearizable (the ReadIndex barrier a Range uses); writes are Raft commands,
which a follower's engine forwards to the leader like any Put. Until the one-time
migration of the legacy public IAM keys is applied, calls wait for it (then
UNAVAILABLE), so no caller sees a half-moved keyspace.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.node import ChainfireNode
from plasmacloud.chainfire.proto import system_pb2, system_pb2_grpc
from plasmacloud.chainfire.services.base import count

SERVICE = "plasmacloud.system.v1.SystemKV"
MEMBERS_ONLY = errors.EtcdError(
    grpc.StatusCode.PERMISSION_DENIED,
    "system keyspace: only cluster members (node certificates) may call SystemKV",
)
NOT_MIGRATED = errors.EtcdError(
    grpc.StatusCode.UNAVAILABLE, "system keyspace: migration of legacy keys not applied yet"
)
_POLL_S = 0.05

R = TypeVar("R")
Handler = Callable[["SystemKVServicer", Any, grpc.aio.ServicerContext], Awaitable[R]]


def certificate_cn(context: grpc.aio.ServicerContext) -> str | None:
    """CN of the client certificate the TLS handshake verified (None without one)."""
    for name in context.auth_context().get("x509_common_name") or []:
        return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return None


def members_only(fn: Handler[R]) -> Handler[R]:
    """Refuse non-members, wait for the migration, map EtcdError to a status, count."""

    @functools.wraps(fn)
    async def wrapper(self: SystemKVServicer, request: Any, context: grpc.aio.ServicerContext) -> R:
        code = "OK"
        try:
            self.check_caller(context)
            await self.ready()
            return await fn(self, request, context)
        except errors.EtcdError as exc:
            code = exc.code.name
            await context.abort(exc.code, exc.message)
            raise AssertionError("abort returned") from exc  # abort always raises
        finally:
            count(self.node, f"{SERVICE}/{fn.__name__}", code)

    return wrapper


class SystemKVServicer(system_pb2_grpc.SystemKVServicer):
    """The SystemKV service of one member."""

    def __init__(self, node: ChainfireNode, *, require_member_cert: bool) -> None:
        self.node = node
        self.require_member_cert = require_member_cert

    def member_ids(self) -> set[str]:
        """The config's members and the Raft group's current ones."""
        ids = {nid for nid, _urls in self.node.identity.client_urls}
        ids.update(m.node_id for m in self.node.raft.status().members)
        ids.add(self.node.identity.node_id)
        return ids

    def check_caller(self, context: grpc.aio.ServicerContext) -> None:
        if self.require_member_cert and certificate_cn(context) not in self.member_ids():
            raise MEMBERS_ONLY

    async def ready(self) -> None:
        deadline = time.monotonic() + self.node.request_timeout
        while not self.node.store.sys_migrated:
            if time.monotonic() > deadline:
                raise NOT_MIGRATED
            await asyncio.sleep(_POLL_S)

    @members_only
    async def Get(
        self, request: system_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.GetResponse:
        await self.node.barrier()
        return self.node.store.sys_get(request)

    @members_only
    async def Range(
        self, request: system_pb2.RangeRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.RangeResponse:
        await self.node.barrier()
        return self.node.store.sys_range(request)

    @members_only
    async def Put(
        self, request: system_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.PutResponse:
        return await self._write(request)

    @members_only
    async def Delete(
        self, request: system_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.DeleteResponse:
        return await self._write(request)

    @members_only
    async def CompareAndSwap(
        self, request: system_pb2.CompareAndSwapRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.CompareAndSwapResponse:
        return await self._write(request)

    async def _write(self, request: Any) -> Any:
        """Replicate one system command (a follower's engine forwards it to the leader)."""
        if not request.key:
            raise errors.EMPTY_KEY
        return await self.node.write(request)
