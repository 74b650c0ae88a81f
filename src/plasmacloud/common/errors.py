"""Exit codes every ``plasma`` command uses, so scripts can trust them."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and found a failure (a red check, a failed step)
EXIT_USAGE = 2  # bad arguments or bad input files (typer/click use 2 as well)
EXIT_UNAVAILABLE = 3  # a service or node the command needs did not answer
