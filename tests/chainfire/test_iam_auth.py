"""Chainfire with auth on: Authenticate through a live in-process IAM, every call decided by
its policies, etcd's error codes and messages for refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from netports import free_port

from plasmacloud.chainfire import errors
from plasmacloud.chainfire.iam_auth import (
    IAM_UNAVAILABLE,
    IamAuthorizer,
    looks_like_jwt,
    peer_ip,
)
from plasmacloud.chainfire.proto import rpc_pb2 as pb
from plasmacloud.iam.authz import AuditRecord, Verifier
from plasmacloud.iam.client import IamClient
from plasmacloud.iam.passwords import FAST_FOR_TESTS
from plasmacloud.iam.server import start_server
from plasmacloud.iam.service import IamService, IamSettings
from plasmacloud.iam.store import MemoryStore
from plasmacloud.iam.tokens import TokenSettings

from .conftest import Served

APP_ONLY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "chainfire:*", "Resource": "key/app/*"}],
}


@dataclass
class Iam:
    url: str
    sa_token: str  # a client-credentials token of a service account allowed key/app/*


@pytest.fixture
async def iam() -> AsyncIterator[Iam]:
    """A live IAM (memory store) with user alice and service account bot, both on key/app/*."""
    host = "127.0.0.71"
    port = free_port(host)
    url = f"http://{host}:{port}"
    settings = IamSettings(
        node_id="node01",
        tokens=TokenSettings(issuer=url),
        hashing=FAST_FOR_TESTS,
        key_cache_seconds=0.0,
    )
    svc = IamService(MemoryStore(), settings)
    runner = await start_server(svc, host, port)
    try:
        admin = await svc.bootstrap()
        assert admin is not None
        async with IamClient([url]) as c:
            await c.login_admin(admin)
            await c.call("POST", "/v1/policies", json={"name": "app", "document": APP_ONLY})
            alice = {"name": "alice", "password": "alice-password-1", "policies": ["app"]}
            await c.call("POST", "/v1/users", json=alice)
            sa = await c.call("POST", "/v1/service-accounts", json={"name": "bot"})
            await c.call("PUT", "/v1/service-accounts/bot/policies/app")
        async with IamClient([url]) as bot:
            form = {
                "grant_type": "client_credentials",
                "client_id": sa["client_id"],
                "client_secret": sa["client_secret"],
            }
            token = str((await bot.login(form))["access_token"])
        yield Iam(url, token)
    finally:
        await runner.cleanup()


@pytest.fixture
async def secured(served: Served, iam: Iam) -> AsyncIterator[Served]:
    verifier = Verifier([iam.url], revocation_refresh=0)
    served.node.authorizer = IamAuthorizer(verifier)
    try:
        yield served
    finally:
        await verifier.close()


async def refusal(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    return exc.value.code(), exc.value.details() or ""


def as_pair(err: errors.EtcdError) -> tuple[grpc.StatusCode, str]:
    return err.code, err.message


async def test_authenticate_then_policy_decides_every_key(secured: Served) -> None:
    login = await secured.auth.Authenticate(
        pb.AuthenticateRequest(name="alice", password="alice-password-1")
    )
    assert looks_like_jwt(login.token)
    md = (("token", login.token),)
    await secured.kv.Put(pb.PutRequest(key=b"app/x", value=b"v"), metadata=md)
    got = await secured.kv.Range(pb.RangeRequest(key=b"app/", range_end=b"app0"), metadata=md)
    assert [kv.key for kv in got.kvs] == [b"app/x"]
    denied = as_pair(errors.PERMISSION_DENIED)
    assert await refusal(secured.kv.Put(pb.PutRequest(key=b"other/x"), metadata=md)) == denied
    # a Txn is refused as a whole when any key it touches is not allowed
    txn = pb.TxnRequest(
        success=[
            pb.RequestOp(request_put=pb.PutRequest(key=b"app/y")),
            pb.RequestOp(request_put=pb.PutRequest(key=b"other/y")),
        ]
    )
    assert await refusal(secured.kv.Txn(txn, metadata=md)) == denied
    everything = pb.RangeRequest(key=b"\0", range_end=b"\0")
    assert await refusal(secured.kv.Range(everything, metadata=md)) == denied
    assert await refusal(secured.cluster.MemberList(pb.MemberListRequest(), metadata=md)) == denied
    assert secured.store.revision == 2  # only app/x was written


async def test_bad_credentials_and_tokens_get_etcds_errors(secured: Served) -> None:
    bad_login = secured.auth.Authenticate(pb.AuthenticateRequest(name="alice", password="nope"))
    assert await refusal(bad_login) == as_pair(errors.AUTH_FAILED)
    put = pb.PutRequest(key=b"app/x")
    forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
    for token in ("garbage", forged):
        answer = await refusal(secured.kv.Put(put, metadata=(("token", token),)))
        assert answer == as_pair(errors.INVALID_AUTH_TOKEN)
    # no token and no client certificate (this server is plain TCP)
    assert await refusal(secured.kv.Put(put)) == as_pair(errors.USER_EMPTY)
    assert secured.store.revision == 1


async def test_a_client_credentials_token_works_as_the_password(secured: Served, iam: Iam) -> None:
    login = await secured.auth.Authenticate(
        pb.AuthenticateRequest(name="bot", password=iam.sa_token)
    )
    assert login.token == iam.sa_token
    md = (("token", login.token),)
    await secured.kv.Put(pb.PutRequest(key=b"app/from-bot", value=b"1"), metadata=md)
    answer = await refusal(secured.kv.DeleteRange(pb.DeleteRangeRequest(key=b"x"), metadata=md))
    assert answer == as_pair(errors.PERMISSION_DENIED)
    # a standard bearer header works too (gRPC clients other than etcd's)
    bearer = (("authorization", f"Bearer {iam.sa_token}"),)
    await secured.kv.Range(pb.RangeRequest(key=b"app/from-bot"), metadata=bearer)


async def test_auth_off_keeps_etcds_answer(served: Served) -> None:
    answer = await refusal(served.auth.Authenticate(pb.AuthenticateRequest(name="a", password="b")))
    assert answer == as_pair(errors.AUTH_NOT_ENABLED)


class _Ctx:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(
    ("peer", "ip"),
    [("ipv4:127.0.0.5:4000", "127.0.0.5"), ("ipv6:[::1]:4000", "::1"), ("unix:/x", None)],
)
def test_peer_ip(peer: str, ip: str | None) -> None:
    assert peer_ip(_Ctx(peer)) == ip  # type: ignore[arg-type]


async def test_watchers_are_authorized_one_by_one(secured: Served) -> None:
    login = await secured.auth.Authenticate(
        pb.AuthenticateRequest(name="alice", password="alice-password-1")
    )
    call = secured.watch.Watch(metadata=(("token", login.token),))
    try:
        await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"other/k")))
        refused = await asyncio.wait_for(call.read(), 5)
        assert refused.canceled and refused.cancel_reason == errors.PERMISSION_DENIED.message
        create = pb.WatchCreateRequest(key=b"app/", range_end=b"app0")
        await call.write(pb.WatchRequest(create_request=create))
        assert (await asyncio.wait_for(call.read(), 5)).created
    finally:
        call.cancel()


class AllowAllWithLogin:
    """Auth on, every call allowed: what an admin sees."""

    async def authorize(self, context: object, rpc: str, ranges: object) -> None:
        return None

    async def authenticate(self, name: str, password: str) -> str:
        return "t"


async def test_etcds_user_management_points_to_iam(served: Served) -> None:
    off = await refusal(served.auth.UserAdd(pb.AuthUserAddRequest(name="bob")))
    assert off == as_pair(errors.AUTH_NOT_ENABLED)
    served.node.authorizer = AllowAllWithLogin()  # type: ignore[assignment]
    code, message = await refusal(served.auth.UserAdd(pb.AuthUserAddRequest(name="bob")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "PlasmaCloud IAM" in message


async def test_after_a_revocation_the_same_password_logs_in_again(
    secured: Served, iam: Iam
) -> None:
    alice = pb.AuthenticateRequest(name="alice", password="alice-password-1")
    first = (await secured.auth.Authenticate(alice)).token
    async with IamClient([iam.url]) as c:
        await c.call("POST", "/oauth2/revoke", data={"token": first}, auth=False)
    put = pb.PutRequest(key=b"app/x")
    answer = await refusal(secured.kv.Put(put, metadata=(("token", first),)))
    assert answer == as_pair(errors.INVALID_AUTH_TOKEN)
    # what clientv3 does on "invalid auth token": log in again and retry
    second = (await secured.auth.Authenticate(alice)).token
    assert second != first
    await secured.kv.Put(put, metadata=(("token", second),))


class CertContext:
    """What the authorizer reads of a call: the verified CN, metadata, the peer."""

    def __init__(self, common_name: str | None, token: str | None = None) -> None:
        self.common_name = common_name
        self.token = token

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [self.common_name.encode()]} if self.common_name else {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("token", self.token),) if self.token else ()

    def peer(self) -> str:
        return "ipv4:127.0.0.9:5000"


@pytest.fixture
def by_certificate(
    cert_verifier: tuple[Verifier, list[AuditRecord]],
) -> tuple[IamAuthorizer, list[AuditRecord]]:
    """An authorizer whose certificate lookups need no IAM (tests/conftest.py)."""
    verifier, audited = cert_verifier
    return IamAuthorizer(verifier), audited


async def refused_with(
    authorizer: IamAuthorizer, ctx: CertContext, rpc: str, key: bytes | None = None
) -> object:
    """The EtcdError the call on ``key`` (None: the cluster) is refused with, or None."""
    ranges = [(key, b"")] if key is not None else []
    try:
        await authorizer.authorize(ctx, rpc, ranges)  # type: ignore[arg-type]
    except errors.EtcdError as exc:
        return exc
    return None


async def test_a_certificate_is_decided_by_the_policies_of_the_principal_its_cn_names(
    by_certificate: tuple[IamAuthorizer, list[AuditRecord]],
) -> None:
    authorizer, audited = by_certificate
    reader = CertContext("reader")
    assert await refused_with(authorizer, reader, "Range", b"app/x") is None
    assert await refused_with(authorizer, reader, "Put", b"app/x") is errors.PERMISSION_DENIED
    assert await refused_with(authorizer, reader, "Range", b"other") is errors.PERMISSION_DENIED
    assert [(r.sub, r.action, r.decision.allowed) for r in audited] == [
        ("user:reader", "chainfire:Range", True),
        ("user:reader", "chainfire:Put", False),
        ("user:reader", "chainfire:Range", False),
    ]


async def test_certificates_refused_as_etcd_refuses_them(
    by_certificate: tuple[IamAuthorizer, list[AuditRecord]],
) -> None:
    authorizer, _audited = by_certificate
    # etcd 3.4 --client-cert-auth: a CN that is no user is "permission denied", no
    # credentials at all "user name is empty"
    stranger = await refused_with(authorizer, CertContext("stranger"), "Range", b"app/x")
    assert stranger is errors.PERMISSION_DENIED
    assert await refused_with(authorizer, CertContext(None), "Range", b"app/x") is errors.USER_EMPTY
    # a token wins over the certificate (as in etcd): a bad one is refused as such
    with_token = CertContext("reader", token="garbage")
    assert (
        await refused_with(authorizer, with_token, "Range", b"app/x") is errors.INVALID_AUTH_TOKEN
    )
    # a node's certificate: its system principal, no user keys, no IAM needed
    node01 = CertContext("node01")
    assert await refused_with(authorizer, node01, "Range", b"app/x") is errors.PERMISSION_DENIED
    assert await refused_with(authorizer, node01, "MemberAdd") is None
    assert await refused_with(authorizer, node01, "MemberList") is None  # am I removed?
    assert await refused_with(authorizer, node01, "Snapshot") is errors.PERMISSION_DENIED
    # IAM unreachable for a lookup it has no answer for: retryable, not a refusal
    unknown = await refused_with(authorizer, CertContext("offline"), "Range", b"app/x")
    assert unknown is IAM_UNAVAILABLE
