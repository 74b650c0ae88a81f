"""The member's client port: how its gRPC server is built, and the loop members run on.

Shared by the member (:mod:`.server`) and its frontend workers (:mod:`.frontend`), which
serve the same port the same way.
"""

from __future__ import annotations

import asyncio

import grpc
import uvloop

from plasmacloud.chainfire.node import GRPC_MAX_RECEIVE
from plasmacloud.common.config import NodeConfig
from plasmacloud.common.tls import grpc_server_credentials

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", GRPC_MAX_RECEIVE),
    ("grpc.max_send_message_length", 2**31 - 1),
    # etcd clients ping every 30 s or so; accept that without GOAWAY
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def grpc_server(config: NodeConfig) -> tuple[grpc.aio.Server, str]:
    """An empty gRPC server bound to the client port (TLS per config); (server, address)."""
    server = grpc.aio.server(options=GRPC_OPTIONS)
    address = f"{config.listen_host}:{config.ports.chainfire_client}"
    if config.tls.enabled:
        server.add_secure_port(address, grpc_server_credentials(config.tls))
    else:
        server.add_insecure_port(address)
    return server, address


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop a member runs on: uvloop's.

    Measured beside asyncio's own loop in the same runs (docs/adr/003): about 20% less
    CPU per replicated put on the leader and the followers, mostly the peer transport's
    TLS (uvloop's is native code, asyncio's ``sslproto`` is Python) and the loop itself.
    """
    return uvloop.new_event_loop()
