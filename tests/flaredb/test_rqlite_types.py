"""rqlite's types and values, unit by unit (the HTTP contract is test_rqlite_contract)."""

from __future__ import annotations

import pytest

from plasmacloud.flaredb.rqlite_types import RqliteValueError, types_and_values


def one(declared: str, value: object) -> object:
    _, ((got,),) = types_and_values([declared], [(value,)])
    return got


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2004-02-14", "2004-02-14T00:00:00Z"),
        ("2004-02-14 07:15", "2004-02-14T07:15:00Z"),
        ("2004-02-14T7:15:09", "2004-02-14T07:15:09Z"),  # Go takes a one-digit hour
        ("2004-02-14 07:15:09,5", "2004-02-14T07:15:09.5Z"),
        ("2004-02-14 07:15:09.123456789123Z", "2004-02-14T07:15:09.123456789Z"),
        ("2004-02-14 07:15:09.100", "2004-02-14T07:15:09.1Z"),
        ("2004-02-14 07:15:09+05:30", "2004-02-14T07:15:09+05:30"),
        ("2004-02-14T07:15:09.25-08:00", "2004-02-14T07:15:09.25-08:00"),
        ("2004-02-14 07:15:09-00:00", "2004-02-14T07:15:09Z"),
        ("2004-02-30", "0001-01-01T00:00:00Z"),  # no such day: Go's zero time
        ("2004-02-14 24:00:00", "0001-01-01T00:00:00Z"),
        ("2004-2-14", "0001-01-01T00:00:00Z"),
        ("2004-02-14 07:15.5", "0001-01-01T00:00:00Z"),
        ("yesterday", "0001-01-01T00:00:00Z"),
    ],
)
def test_time_column_text(text: str, want: str) -> None:
    for declared in ("date", "datetime", "timestamp"):
        assert one(declared, text) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (-1, "1969-12-31T23:59:59Z"),
        (1_000_000_000_001, "2001-09-09T01:46:40.001Z"),  # beyond: milliseconds
        (-1_000_000_000_001, "1938-04-24T22:13:19.999Z"),
    ],
)
def test_time_column_integers(value: int, want: str) -> None:
    assert one("timestamp", value) == want


def test_a_time_beyond_year_9999_is_the_statements_error() -> None:
    """1e12 is not beyond 1e12: seconds, in the year 33658, which Go cannot print."""
    with pytest.raises(RqliteValueError, match=r"year outside of range \[0,9999\]"):
        one("datetime", 1_000_000_000_000)


def test_time_column_edge_values() -> None:
    # Go multiplies milliseconds by 1e6 in int64 and wraps: still a time, never an error.
    assert one("date", 2**62).endswith("Z")
    assert one("date", 2.5) == 2.5  # a REAL stays a number
    assert one("date", b"\x00") == b"\x00"  # a BLOB stays bytes (base64 on the wire)
    with pytest.raises(RqliteValueError, match="timezone hour"):
        one("datetime", "2004-02-14 07:15:09+24:00")


def test_boolean_and_text_affinity_columns() -> None:
    assert [one("boolean", v) for v in (2, 1, 0, -1, 1.5, "y")] == [
        True,
        True,
        False,
        False,
        1.5,
        "y",
    ]
    for declared in ("text", "json", "", "varchar(10)", "nchar", "clob", "native character"):
        assert one(declared, b"SQL") == "SQL"
    for declared in ("blob", "int", "bool", "character"):  # rqlite's list, not SQLite's rule
        assert one(declared, b"SQL") == b"SQL"
    # Go's JSON encoder: one U+FFFD per byte that is not valid UTF-8.
    assert one("text", b"a\xffb\xe2\x82") == "a\ufffdb\ufffd\ufffd"


def test_undeclared_types_come_from_the_first_row_only() -> None:
    types, _ = types_and_values(
        ["", "", "", "", "int"], [(1, 1.5, None, b"x", 1), ("a", 2, 3, 4, 5)]
    )
    assert types == ["integer", "real", "", "text", "int"]  # the BLOB became text first
    assert types_and_values(["", "date"], []) == (["", "date"], [])
