"""etcdserverpb.Auth: ``Authenticate`` through IAM when auth is enabled.

Users, roles and tokens come from PlasmaCloud IAM (``chainfire.iam_auth``), not from
etcd's own auth store: ``Authenticate`` answers when the node's authorizer can log
users in, and every other Auth call answers like an etcd whose auth is disabled, so
clients get a clear, etcd-shaped reason.
"""

from __future__ import annotations

from typing import Any

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.auth import PasswordAuthenticator
from plasmacloud.chainfire.iam_auth import peer_ip
from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.chainfire.services.base import Servicer, unary

# with auth on, etcd's user/role RPCs point to where identities live
MANAGED_BY_IAM = errors.EtcdError(
    grpc.StatusCode.FAILED_PRECONDITION,
    "etcdserver: users, roles and auth are managed by PlasmaCloud IAM (plasma iam --help)",
)


async def _not_enabled(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
    if isinstance(self.node.authorizer, PasswordAuthenticator):
        raise MANAGED_BY_IAM
    raise errors.AUTH_NOT_ENABLED


class AuthServicer(Servicer, rpc_pb2_grpc.AuthServicer):
    service = "etcdserverpb.Auth"

    @unary
    async def AuthDisable(
        self, request: rpc_pb2.AuthDisableRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.AuthDisableResponse:
        return rpc_pb2.AuthDisableResponse(header=self.node.header())

    @unary
    async def Authenticate(
        self, request: rpc_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.AuthenticateResponse:
        authenticator = self.node.authorizer
        if not isinstance(authenticator, PasswordAuthenticator):
            raise errors.AUTH_NOT_ENABLED
        token = await authenticator.authenticate(request.name, request.password, peer_ip(context))
        return rpc_pb2.AuthenticateResponse(header=self.node.header(), token=token)


for _name in rpc_pb2.DESCRIPTOR.services_by_name["Auth"].methods_by_name:
    if _name not in ("AuthDisable", "Authenticate"):
        _handler = unary(_not_enabled)
        _handler.__name__ = _name
        setattr(AuthServicer, _name, _handler)
