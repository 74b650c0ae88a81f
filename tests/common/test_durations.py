"""Go-style durations: rqlite's ?timeout= and the lab's chaos --duration read them alike."""

from __future__ import annotations

import pytest

from plasmacloud.common.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("90", 90.0),
        ("30m", 1800.0),
        ("1h30m", 5400.0),  # etcd's compaction retention takes Go's compound form
        ("250ms", 0.25),
    ],
)
def test_durations_in_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["soon", "", "-1s", "2d", "s", "h", "1d", "1 h", "-1h", "1h-", "1h30"]
)
def test_what_is_no_duration_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .* \(use e\.g\. 500ms, 2s, 1m\)"):
        parse_duration(text)
