"""etcd's gRPC errors (codes and messages exactly as etcd 3.4 sends them).

Clients such as ``etcdctl`` and clientv3 match on the message text to decide whether to
retry, so these strings are part of the wire contract (etcd's
``etcdserver/api/v3rpc/rpctypes/error.go``).
"""

from __future__ import annotations

import grpc


class EtcdError(Exception):
    """An error that reaches the client as a gRPC status with etcd's code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, EtcdError)
            and other.code == self.code
            and other.message == self.message
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"


_C = grpc.StatusCode
INTERNAL_CODE = _C.INTERNAL

EMPTY_KEY = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
COMPACTED = EtcdError(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = EtcdError(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
NO_SPACE = EtcdError(_C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")

LEASE_NOT_FOUND = EtcdError(_C.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXISTS = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = EtcdError(_C.OUT_OF_RANGE, "etcdserver: too large lease TTL")

MEMBER_EXISTS = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PEER_URL_EXISTS = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MEMBER_BAD_URLS = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MEMBER_NOT_FOUND = EtcdError(_C.NOT_FOUND, "etcdserver: member not found")

REQUEST_TOO_LARGE = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: request is too large")
AUTH_NOT_ENABLED = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
AUTH_FAILED = EtcdError(
    _C.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password"
)
USER_EMPTY = EtcdError(_C.INVALID_ARGUMENT, "etcdserver: user name is empty")
INVALID_AUTH_TOKEN = EtcdError(_C.UNAUTHENTICATED, "etcdserver: invalid auth token")
PERMISSION_DENIED = EtcdError(_C.PERMISSION_DENIED, "etcdserver: permission denied")

NO_LEADER = EtcdError(_C.UNAVAILABLE, "etcdserver: no leader")
LEADER_CHANGED = EtcdError(_C.UNAVAILABLE, "etcdserver: leader changed")
STOPPED = EtcdError(_C.UNAVAILABLE, "etcdserver: server stopped")
TIMEOUT = EtcdError(_C.UNAVAILABLE, "etcdserver: request timed out")
TIMEOUT_LEADER_FAIL = EtcdError(
    _C.UNAVAILABLE, "etcdserver: request timed out, possibly due to previous leader failure"
)
NOT_CAPABLE = EtcdError(_C.UNAVAILABLE, "etcdserver: not capable")
NOT_LEADER = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: not leader")
BAD_LEADER_TRANSFEREE = EtcdError(_C.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
LEADER_TRANSFER_TIMEOUT = EtcdError(
    _C.UNAVAILABLE, "etcdserver: request timed out, leader transfer took too long"
)


def invalid_argument(message: str) -> EtcdError:
    """An INVALID_ARGUMENT error with an etcd-style message."""
    return EtcdError(_C.INVALID_ARGUMENT, f"etcdserver: {message}")
