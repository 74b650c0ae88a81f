"""A small async Chainfire (etcd v3) client for PlasmaCloud's own use.

IAM keeps its state through it, the lab and the validator ask it for members and
status. It speaks the same gRPC API as etcdctl, so it works against etcd too. Errors come
back as :class:`~plasmacloud.chainfire.errors.EtcdError` with etcd's code and message, so
callers can compare them with the constants in ``plasmacloud.chainfire.errors``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from plasmacloud.chainfire.errors import EtcdError
from plasmacloud.chainfire.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from plasmacloud.common.config import NodeConfig, TLSConfig
from plasmacloud.common.keyrange import prefix_end
from plasmacloud.common.tls import grpc_pem_material

T = TypeVar("T")

# codes after which another endpoint may well succeed
_RETRY_ON = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _b(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class _Stubs:
    """The service stubs of one endpoint's channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.watch = rpc_pb2_grpc.WatchStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(channel)


class ChainfireClient:
    """Async client over one or more endpoints (``host:port``); fails over on UNAVAILABLE."""

    def __init__(
        self,
        endpoints: Sequence[str],
        tls: TLSConfig | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._creds = None
        if tls is not None and tls.enabled:
            ca, cert, key = grpc_pem_material(tls)
            self._creds = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=cert
            )
        self._stubs: dict[str, _Stubs] = {}
        self._current = 0

    @classmethod
    def for_node(cls, config: NodeConfig, all_peers: bool = True) -> ChainfireClient:
        """A client for a node's cluster (all peers' client ports), with the node's TLS."""
        peers = config.peers if all_peers else [config.me]
        endpoints = [f"{p.ip}:{p.ports.chainfire_client}" for p in peers]
        return cls(endpoints, config.tls)

    async def __aenter__(self) -> ChainfireClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every channel."""
        for stubs in self._stubs.values():
            await stubs.channel.close()
        self._stubs.clear()

    def _endpoint_stubs(self, endpoint: str) -> _Stubs:
        stubs = self._stubs.get(endpoint)
        if stubs is None:
            options = [
                ("grpc.max_receive_message_length", 2**31 - 1),
                # grpc-core shares subchannels between channels by default, so a new
                # client would inherit another's connect backoff to a restarted member
                ("grpc.use_local_subchannel_pool", 1),
            ]
            channel = (
                grpc.aio.secure_channel(endpoint, self._creds, options=options)
                if self._creds is not None
                else grpc.aio.insecure_channel(endpoint, options=options)
            )
            stubs = self._stubs[endpoint] = _Stubs(channel)
        return stubs

    async def _call(self, fn: Callable[[_Stubs], Awaitable[T]]) -> T:
        """Run one RPC, moving to the next endpoint when this one is unavailable."""
        last: grpc.aio.AioRpcError | None = None
        for attempt in range(len(self.endpoints)):
            endpoint = self.endpoints[(self._current + attempt) % len(self.endpoints)]
            try:
                result = await fn(self._endpoint_stubs(endpoint))
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRY_ON:
                    raise EtcdError(exc.code(), exc.details() or "") from exc
                last = exc
                continue
            self._current = self.endpoints.index(endpoint)
            return result
        assert last is not None
        raise EtcdError(last.code(), last.details() or "") from last

    # -- KV ----------------------------------------------------------------------------

    async def get(self, key: bytes | str, serializable: bool = False) -> kv_pb2.KeyValue | None:
        """The key's current KeyValue, or None."""
        req = rpc_pb2.RangeRequest(key=_b(key), serializable=serializable)
        resp = await self._call(lambda s: s.kv.Range(req, timeout=self.timeout))
        return resp.kvs[0] if resp.kvs else None

    async def range_prefix(
        self, prefix: bytes | str, limit: int = 0, keys_only: bool = False
    ) -> list[kv_pb2.KeyValue]:
        """Every key under a prefix, sorted by key."""
        p = _b(prefix)
        req = rpc_pb2.RangeRequest(key=p, range_end=prefix_end(p), limit=limit, keys_only=keys_only)
        resp = await self._call(lambda s: s.kv.Range(req, timeout=self.timeout))
        return list(resp.kvs)

    async def put(
        self, key: bytes | str, value: bytes | str, lease: int = 0
    ) -> rpc_pb2.PutResponse:
        """Write a key; the response header carries the new revision."""
        req = rpc_pb2.PutRequest(key=_b(key), value=_b(value), lease=lease, prev_kv=True)
        return await self._call(lambda s: s.kv.Put(req, timeout=self.timeout))

    async def delete(self, key: bytes | str, prefix: bool = False) -> int:
        """Delete a key (or every key under a prefix); returns how many were deleted."""
        k = _b(key)
        req = rpc_pb2.DeleteRangeRequest(key=k, range_end=prefix_end(k) if prefix else b"")
        resp = await self._call(lambda s: s.kv.DeleteRange(req, timeout=self.timeout))
        return int(resp.deleted)

    async def txn(
        self,
        compare: Sequence[rpc_pb2.Compare],
        success: Sequence[rpc_pb2.RequestOp] = (),
        failure: Sequence[rpc_pb2.RequestOp] = (),
    ) -> rpc_pb2.TxnResponse:
        """An etcd transaction (see :func:`put_op`, :func:`version_is` and friends)."""
        req = rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure)
        return await self._call(lambda s: s.kv.Txn(req, timeout=self.timeout))

    async def put_if_absent(self, key: bytes | str, value: bytes | str, lease: int = 0) -> bool:
        """Create a key only if it does not exist; True if this call created it."""
        resp = await self.txn([version_is(key, 0)], [put_op(key, value, lease)])
        return bool(resp.succeeded)

    async def compare_and_swap(
        self, key: bytes | str, mod_revision: int, value: bytes | str
    ) -> bool:
        """Write a key only if it was last modified at ``mod_revision`` (0: absent)."""
        cmp = rpc_pb2.Compare(
            key=_b(key),
            target=rpc_pb2.Compare.MOD,
            result=rpc_pb2.Compare.EQUAL,
            mod_revision=mod_revision,
        )
        resp = await self.txn([cmp], [put_op(key, value)])
        return bool(resp.succeeded)

    # -- leases --------------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> int:
        """Grant a lease; returns its ID."""
        req = rpc_pb2.LeaseGrantRequest(TTL=ttl)
        resp = await self._call(lambda s: s.lease.LeaseGrant(req, timeout=self.timeout))
        return int(resp.ID)

    async def lease_revoke(self, lease_id: int) -> None:
        req = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        await self._call(lambda s: s.lease.LeaseRevoke(req, timeout=self.timeout))

    async def lease_keepalive(self, lease_id: int) -> int:
        """Refresh a lease once; returns its TTL (0 if it no longer exists)."""

        async def once(s: _Stubs) -> int:
            call = s.lease.LeaseKeepAlive(timeout=self.timeout)
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            resp = await call.read()
            call.cancel()
            return int(resp.TTL)

        return await self._call(once)

    # -- cluster ---------------------------------------------------------------------------

    async def member_list(self) -> list[rpc_pb2.Member]:
        req = rpc_pb2.MemberListRequest()
        resp = await self._call(lambda s: s.cluster.MemberList(req, timeout=self.timeout))
        return list(resp.members)

    async def member_add(self, peer_url: str) -> rpc_pb2.Member:
        """Add a member by its peer URL (``https://node04:2380``); returns the new member.

        The new node runs with ``bootstrap: false`` and its node id is found from the URL
        in the cluster config (or is the URL's hostname).
        """
        req = rpc_pb2.MemberAddRequest(peerURLs=[peer_url])
        resp = await self._call(lambda s: s.cluster.MemberAdd(req, timeout=self.timeout))
        return resp.member

    async def member_remove(self, member_id: int) -> None:
        """Remove a member by its ID (see ``plasmacloud.chainfire.node.member_id``)."""
        req = rpc_pb2.MemberRemoveRequest(ID=member_id)
        await self._call(lambda s: s.cluster.MemberRemove(req, timeout=self.timeout))

    async def status(self, endpoint: str | None = None) -> rpc_pb2.StatusResponse:
        """Maintenance.Status of one endpoint (default: the current one)."""
        req = rpc_pb2.StatusRequest()
        if endpoint is None:
            return await self._call(lambda s: s.maintenance.Status(req, timeout=self.timeout))
        try:
            return await self._endpoint_stubs(endpoint).maintenance.Status(
                req, timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise EtcdError(exc.code(), exc.details() or "") from exc

    # -- watch -------------------------------------------------------------------------------

    async def watch(
        self,
        key: bytes | str,
        prefix: bool = False,
        start_revision: int = 0,
        prev_kv: bool = False,
    ) -> AsyncIterator[kv_pb2.Event]:
        """Yield events for a key (or prefix) from ``start_revision`` until cancelled.

        Raises EtcdError(OUT_OF_RANGE) if ``start_revision`` was compacted away.
        """
        k = _b(key)
        create = rpc_pb2.WatchCreateRequest(
            key=k,
            range_end=prefix_end(k) if prefix else b"",
            start_revision=start_revision,
            prev_kv=prev_kv,
        )
        stubs = self._endpoint_stubs(self.endpoints[self._current])
        call: Any = stubs.watch.Watch()
        try:
            await call.write(rpc_pb2.WatchRequest(create_request=create))
            while True:
                try:
                    resp = await call.read()
                except grpc.aio.AioRpcError as exc:
                    raise EtcdError(exc.code(), exc.details() or "") from exc
                if resp is grpc.aio.EOF:
                    return
                if resp.compact_revision:
                    raise EtcdError(
                        grpc.StatusCode.OUT_OF_RANGE,
                        "etcdserver: mvcc: required revision has been compacted",
                    )
                if resp.canceled:
                    return
                for event in resp.events:
                    yield event
        finally:
            call.cancel()


def put_op(key: bytes | str, value: bytes | str, lease: int = 0) -> rpc_pb2.RequestOp:
    """A Put inside a txn."""
    return rpc_pb2.RequestOp(
        request_put=rpc_pb2.PutRequest(key=_b(key), value=_b(value), lease=lease)
    )


def delete_op(key: bytes | str) -> rpc_pb2.RequestOp:
    """A DeleteRange of one key inside a txn."""
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=_b(key)))


def get_op(key: bytes | str) -> rpc_pb2.RequestOp:
    """A Range of one key inside a txn."""
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=_b(key)))


def version_is(key: bytes | str, version: int) -> rpc_pb2.Compare:
    """Compare: the key's version equals ``version`` (0 means the key does not exist)."""
    return rpc_pb2.Compare(
        key=_b(key),
        target=rpc_pb2.Compare.VERSION,
        result=rpc_pb2.Compare.EQUAL,
        version=version,
    )


def value_is(key: bytes | str, value: bytes | str) -> rpc_pb2.Compare:
    """Compare: the key exists and holds ``value``."""
    return rpc_pb2.Compare(
        key=_b(key), target=rpc_pb2.Compare.VALUE, result=rpc_pb2.Compare.EQUAL, value=_b(value)
    )
