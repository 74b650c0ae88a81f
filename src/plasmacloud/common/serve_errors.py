"""How every ``plasma <service> serve`` ends when its server cannot run.

Kept out of ``common.errors`` so that the exit codes stay free to import: this module
needs the config's error type, and pydantic with it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from plasmacloud.common.config import ConfigError
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_USAGE


@contextmanager
def serve_exit_codes(service: str) -> Iterator[None]:
    """A bad cluster-config is a usage error, anything the OS refused (a port in use, a
    data directory another process holds) a failure; either said on stderr, without a
    traceback."""
    try:
        yield
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from exc
    except OSError as exc:
        print(f"error: {service} could not start: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FAILURE) from exc
