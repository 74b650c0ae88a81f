"""A server that cannot start ends `plasma <service> serve` with a message and a code."""

from __future__ import annotations

import pytest

from plasmacloud.common.config import ConfigError
from plasmacloud.common.errors import EXIT_FAILURE, EXIT_USAGE
from plasmacloud.common.serve_errors import serve_exit_codes


def test_a_bad_config_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_, serve_exit_codes("flaredb"):
        raise ConfigError("peers: node02 is listed twice")
    assert exit_.value.code == EXIT_USAGE
    assert capsys.readouterr().err == "error: peers: node02 is listed twice\n"


def test_what_the_os_refuses_is_a_failure_naming_the_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_, serve_exit_codes("chainfire"):
        raise OSError(98, "address already in use")
    assert exit_.value.code == EXIT_FAILURE
    assert "error: chainfire could not start: [Errno 98] address already in use" in (
        capsys.readouterr().err
    )


def test_other_errors_are_not_hidden() -> None:
    with pytest.raises(KeyError), serve_exit_codes("IAM"):
        raise KeyError("a bug keeps its traceback")
