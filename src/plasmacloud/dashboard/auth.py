"""Who may look: the one-time login token the command prints, and the sessions it opens.

As Jupyter does, ``plasma dashboard`` prints a URL carrying a random token. Opening it
once trades the token for a session cookie (HttpOnly, SameSite=Strict) and redirects to a
URL without the token, so the token is neither reusable nor left in the browser's
address bar or history. Every other request needs the session.
"""

from __future__ import annotations

import secrets

SESSION_COOKIE = "plasma_dashboard_session"
TOKEN_BYTES = 32  # 256 bits: guessing is out of the question, and it is still one line


class Gate:
    """The one login token (until redeemed) and the session ids handed out for it."""

    def __init__(self) -> None:
        self._token: str | None = secrets.token_urlsafe(TOKEN_BYTES)
        self._sessions: set[str] = set()

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
        self._sessions.add(session)
        return session

    def admits(self, session: str | None) -> bool:
        """True if ``session`` is one this gate handed out."""
        return session is not None and any(
            secrets.compare_digest(session, s) for s in self._sessions
        )
