"""Who may look: the one-time login token the command prints, and the sessions it opens.

As Jupyter does, ``plasma dashboard`` prints a URL carrying a random token. Opening it
once trades the token for a session cookie (HttpOnly, SameSite=Strict) and redirects to a
URL without the token, so the token is neither reusable nor left in the browser's
address bar or history. Every other request needs the session. A session lasts
``session_s`` (12 h unless told) or until its logout, a POST carrying the session's own
CSRF token (a page of the dashboard has it; a page elsewhere cannot read it).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "plasma_dashboard_session"
TOKEN_BYTES = 32  # 256 bits: guessing is out of the question, and it is still one line
# A working day and then some: long enough not to log in twice in a shift, short enough
# that a cookie left in a browser does not open the cluster's page for days.
DEFAULT_SESSION_S = 12 * 3600.0


@dataclass(frozen=True)
class Session:
    """One logged-in browser: when it ends (on the gate's clock) and its CSRF token."""

    expires: float
    csrf: str


class Gate:
    """The one login token (until redeemed) and the sessions handed out for it.

    ``clock``: seconds on a clock that does not jump (tests pass their own)."""

    def __init__(
        self,
        session_s: float = DEFAULT_SESSION_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if session_s <= 0:
            raise ValueError(f"a session must last some time, not {session_s} s")
        self.session_s = session_s
        self._clock = clock
        self._token: str | None = secrets.token_urlsafe(TOKEN_BYTES)
        self._sessions: dict[str, Session] = {}

    @property
    def token(self) -> str:
        """The token to print (only before it is redeemed: nobody should need it after)."""
        if self._token is None:
            raise RuntimeError("the login token was already used")
        return self._token

    def redeem(self, token: str) -> str | None:
        """A new session id if ``token`` is the login token, not used before; else None."""
        if self._token is None or not secrets.compare_digest(token, self._token):
            return None
        self._token = None
        session = secrets.token_urlsafe(TOKEN_BYTES)
        csrf = secrets.token_urlsafe(TOKEN_BYTES)
        self._sessions[session] = Session(self._clock() + self.session_s, csrf)
        return session

    def _live(self, session: str | None) -> Session | None:
        """The session ``session`` names if it has not expired (an expired one is
        forgotten)."""
        if session is None:
            return None
        found = next(
            (s for sid, s in self._sessions.items() if secrets.compare_digest(session, sid)),
            None,
        )
        if found is not None and self._clock() >= found.expires:
            del self._sessions[session]
            return None
        return found

    def admits(self, session: str | None) -> bool:
        """True if ``session`` is one this gate handed out, not expired nor logged out."""
        return self._live(session) is not None

    def csrf(self, session: str) -> str:
        """The CSRF token of a live session (KeyError if it is not one)."""
        live = self._live(session)
        if live is None:
            raise KeyError("no such session")
        return live.csrf

    def end(self, session: str | None, csrf: str) -> bool:
        """Log ``session`` out if ``csrf`` is its CSRF token; True if it was ended."""
        live = self._live(session)
        if session is None or live is None or not secrets.compare_digest(csrf, live.csrf):
            return False
        del self._sessions[session]
        return True
