"""Raft command encoding: one op-tag byte followed by the etcd protobuf request itself.

Replicating the request messages (rather than a richer internal format) keeps log
entries compact and makes the state machine's input exactly what the client sent, after
the server's validation. The system keyspace's commands (``SYS_*``) carry the
messages of ``system.proto`` the same way.
"""

from __future__ import annotations

from enum import IntEnum

from google.protobuf.message import DecodeError, Message

from plasmacloud.chainfire.proto import rpc_pb2, system_pb2


class Op(IntEnum):
    PUT = 1
    DELETE_RANGE = 2
    TXN = 3
    COMPACT = 4
    LEASE_GRANT = 5
    LEASE_REVOKE = 6
    LEASE_KEEPALIVE = 7
    ALARM = 8
    SYS_PUT = 9
    SYS_DELETE = 10
    SYS_CAS = 11
    SYS_MIGRATE = 12


_TYPES: dict[Op, type[Message]] = {
    Op.PUT: rpc_pb2.PutRequest,
    Op.DELETE_RANGE: rpc_pb2.DeleteRangeRequest,
    Op.TXN: rpc_pb2.TxnRequest,
    Op.COMPACT: rpc_pb2.CompactionRequest,
    Op.LEASE_GRANT: rpc_pb2.LeaseGrantRequest,
    Op.LEASE_REVOKE: rpc_pb2.LeaseRevokeRequest,
    Op.LEASE_KEEPALIVE: rpc_pb2.LeaseKeepAliveRequest,
    Op.ALARM: rpc_pb2.AlarmRequest,
    Op.SYS_PUT: system_pb2.PutRequest,
    Op.SYS_DELETE: system_pb2.DeleteRequest,
    Op.SYS_CAS: system_pb2.CompareAndSwapRequest,
    Op.SYS_MIGRATE: system_pb2.MigrateRequest,
}
_OP_OF = {cls: op for op, cls in _TYPES.items()}


class CommandError(ValueError):
    """The command bytes are not a valid Chainfire command."""


def encode(request: Message) -> bytes:
    """Command bytes for one etcd request message."""
    try:
        op = _OP_OF[type(request)]
    except KeyError:
        raise TypeError(f"{type(request).__name__} is not a replicated request") from None
    return bytes((op,)) + request.SerializeToString()


def decode(data: bytes) -> tuple[Op, Message]:
    """Parse command bytes back into (op, request); raises CommandError on garbage."""
    if not data:
        raise CommandError("empty command")
    try:
        op = Op(data[0])
    except ValueError:
        raise CommandError(f"unknown op tag {data[0]}") from None
    msg = _TYPES[op]()
    try:
        msg.ParseFromString(data[1:])
    except DecodeError as exc:
        raise CommandError(f"undecodable {op.name} command: {exc}") from exc
    return op, msg
