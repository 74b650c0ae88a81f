"""The bootstrap admin's credentials file: JSON, mode 0600, never logged."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

FIELDS = ("username", "password", "client_id", "client_secret")


class CredentialsError(ValueError):
    """The credentials file is missing, unreadable, malformed or too open."""


@dataclass(frozen=True, slots=True)
class AdminCredentials:
    """``{username, password, client_id, client_secret}`` of the bootstrap admin."""

    username: str
    password: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return f"AdminCredentials(username={self.username!r}, client_id={self.client_id!r})"

    def write(self, path: Path) -> None:
        """Write as JSON readable only by the owner (created 0600, re-chmod-ed if it existed)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode on O_TRUNC
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")

    @classmethod
    def read(cls, path: Path) -> AdminCredentials:
        """Load, refusing a file that group or others can read (like ssh does with keys)."""
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CredentialsError(f"{path}: no such file (run `plasma iam bootstrap`)") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise CredentialsError(f"{path}: unreadable ({exc})") from None
        if mode & 0o077:
            raise CredentialsError(
                f"{path} is accessible by others (mode {mode:04o}); run `chmod 600 {path}`"
            )
        try:
            return cls(
                **{k: str(raw[k]) for k in ("username", "password", "client_id", "client_secret")}
            )
        except (KeyError, TypeError):
            raise CredentialsError(
                f"{path}: expected JSON with username, password, client_id, client_secret"
            ) from None
