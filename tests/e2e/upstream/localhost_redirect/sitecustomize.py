"""Loaded by the upstream suite's Python (on its PYTHONPATH): suites that hard-code
``localhost:PORT`` reach the lab node named by PLASMA_SUITE_HOST instead.

Labs in tests run on a random 127.x.y.11 so parallel runs never collide; binding
127.0.0.1:4001 for a suite would. Only the name resolution of localhost/127.0.0.1 on
the port in PLASMA_SUITE_PORT changes; the suite's code is untouched.
"""

import os
import socket

_target = os.environ["PLASMA_SUITE_HOST"]
_port = int(os.environ["PLASMA_SUITE_PORT"])
_getaddrinfo = socket.getaddrinfo


def _redirected(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
    if host in ("localhost", "127.0.0.1") and port is not None and int(port) == _port:
        host = _target
    return _getaddrinfo(host, port, *args, **kwargs)


socket.getaddrinfo = _redirected
