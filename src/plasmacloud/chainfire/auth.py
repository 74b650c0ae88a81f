"""The hook through which requests are authorized (by IAM: ``chainfire.iam_auth``).

Chainfire does not authenticate by itself: with no :class:`Authorizer` installed on the
node every request is allowed, as in an etcd whose auth is disabled. An authorizer sees
the RPC name (``Put``, ``Range``, ``Watch``, ``MemberList``...) and every key range the
request touches, and refuses by raising an :class:`~plasmacloud.chainfire.errors.EtcdError`
(``PERMISSION_DENIED`` / ``UNAUTHENTICATED``); IAM decides them as ``chainfire:<RPC>``
on ``key/<key>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import grpc

from plasmacloud.chainfire.proto import rpc_pb2

KeyRange = tuple[bytes, bytes]  # (key, range_end) with etcd's meaning of range_end


class Authorizer(Protocol):
    async def authorize(
        self, context: grpc.aio.ServicerContext, rpc: str, ranges: Sequence[KeyRange]
    ) -> None:
        """Return to allow; raise EtcdError to refuse. ``ranges`` is empty for RPCs that
        concern the whole cluster (members, status, snapshot...)."""


@runtime_checkable
class PasswordAuthenticator(Protocol):
    """An authorizer that can also answer etcd's ``Auth.Authenticate`` (name + password)."""

    async def authenticate(self, name: str, password: str, client_ip: str | None = None) -> str:
        """The token for these credentials; raise EtcdError (AUTH_FAILED) to refuse.
        ``client_ip`` is the caller's address (brute-force limits count per client)."""


def touched_ranges(request: Any) -> list[KeyRange]:
    """Every key range a request reads or writes (a Txn: its compares and all its ops)."""
    if isinstance(request, rpc_pb2.TxnRequest):
        out = [(c.key, c.range_end) for c in request.compare]
        for op in (*request.success, *request.failure):
            kind = op.WhichOneof("request")
            if kind is not None:
                out.extend(touched_ranges(getattr(op, kind)))
        return out
    if isinstance(
        request,
        rpc_pb2.RangeRequest | rpc_pb2.DeleteRangeRequest | rpc_pb2.WatchCreateRequest,
    ):
        return [(request.key, request.range_end)]
    if isinstance(request, rpc_pb2.PutRequest):
        return [(request.key, b"")]
    return []
