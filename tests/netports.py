"""Free TCP ports for test servers, each handed out once per test process.

A port is found by binding port 0 and closing the socket; the kernel may give the same
port to the next such bind, so a node that needs several ports could get one twice
(a config then fails its every-service-its-own-port check, as a CI run once did).
Remembering what was handed out rules that out.
"""

from __future__ import annotations

import socket

_given: set[tuple[str, int]] = set()


def free_port(host: str) -> int:
    """A port nothing listens on at ``host`` now, never returned before in this process."""
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if (host, port) not in _given:
            _given.add((host, port))
            return port
