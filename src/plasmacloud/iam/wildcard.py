"""IAM-style wildcard matching: ``*`` matches any run of characters, ``?`` exactly one."""

from __future__ import annotations

import re
from functools import lru_cache


def _regex(pattern: str) -> str:
    return "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)


def _flags(ignore_case: bool) -> int:
    return re.DOTALL | (re.IGNORECASE if ignore_case else 0)


@lru_cache(maxsize=4096)
def _compile(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    return re.compile(_regex(pattern), _flags(ignore_case))


def any_of(patterns: tuple[str, ...], ignore_case: bool = False) -> re.Pattern[str]:
    """One compiled pattern whose ``fullmatch`` says whether a value matches any of
    ``patterns`` (a policy statement's list, matched on every request)."""
    return re.compile("|".join(f"(?:{_regex(p)})" for p in patterns), _flags(ignore_case))


def wildcard_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """Whether ``value`` matches ``pattern`` as a whole (``*`` also crosses ``/``)."""
    return _compile(pattern, ignore_case).fullmatch(value) is not None


def _states_after(pattern: str, text: str) -> set[int]:
    """Positions in ``pattern`` reachable after reading ``text`` (a glob NFA run)."""

    def close(states: set[int]) -> set[int]:
        # '*' may match nothing: a state before a '*' is also a state after it.
        out = set(states)
        for s in sorted(states):
            while s < len(pattern) and pattern[s] == "*":
                s += 1
                out.add(s)
        return out

    states = close({0})
    for ch in text:
        nxt = set()
        for s in states:
            if s < len(pattern):
                if pattern[s] == "*":
                    nxt.add(s)
                elif pattern[s] == "?" or pattern[s] == ch:
                    nxt.add(s + 1)
        states = close(nxt)
        if not states:
            break
    return states


def covers_prefix(pattern: str, prefix: str) -> bool:
    """Whether ``pattern`` matches *every* string that starts with ``prefix``.

    True when, after reading ``prefix``, the rest of the pattern can be only ``*``. Exact
    for the patterns people write (``key/app/*``); otherwise it errs on the side of "no".
    """
    return any(
        s < len(pattern) and set(pattern[s:]) == {"*"} for s in _states_after(pattern, prefix)
    )


def intersects_prefix(pattern: str, prefix: str) -> bool:
    """Whether ``pattern`` matches *some* string that starts with ``prefix``."""
    return bool(_states_after(pattern, prefix))
