"""etcdserverpb.Auth: authentication is not enabled in Chainfire yet.

Users, roles and tokens will come from PlasmaCloud IAM (policy checks through
``iam.authz``), not from etcd's own auth store; until then every Auth call answers like
an etcd whose auth is disabled, so clients get a clear, etcd-shaped reason.
"""

from __future__ import annotations

from typing import Any

import grpc

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.proto import rpc_pb2, rpc_pb2_grpc
from plasmacloud.chainfire.services.base import Servicer, unary


async def _not_enabled(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
    raise errors.AUTH_NOT_ENABLED


class AuthServicer(Servicer, rpc_pb2_grpc.AuthServicer):
    service = "etcdserverpb.Auth"

    @unary
    async def AuthDisable(
        self, request: rpc_pb2.AuthDisableRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.AuthDisableResponse:
        return rpc_pb2.AuthDisableResponse(header=self.node.header())


for _name in rpc_pb2.DESCRIPTOR.services_by_name["Auth"].methods_by_name:
    if _name != "AuthDisable":
        _handler = unary(_not_enabled)
        _handler.__name__ = _name
        setattr(AuthServicer, _name, _handler)
