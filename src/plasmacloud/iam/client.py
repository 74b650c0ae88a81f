"""A small async client of the IAM REST API (used by ``plasma iam`` and the lab)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from plasmacloud.iam.credentials import AdminCredentials


class IamApiError(Exception):
    """IAM answered with an error; ``body`` is its JSON (``error``, ``message``, ``errors``)."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        if isinstance(body, dict):
            text = body.get("message") or body.get("error_description") or body.get("error")
        else:
            text = str(body)[:300]
        super().__init__(f"HTTP {status}: {text}")


class IamClient:
    """Talks to the first of ``urls`` that answers; holds one access token."""

    def __init__(self, urls: Sequence[str], cacert: Path | None = None, timeout: float = 10.0):
        if not urls:
            raise ValueError("no IAM URL given (set IAM_URL or pass --url)")
        self.urls = [u.rstrip("/") for u in urls]
        self._ssl: ssl.SSLContext | bool = True
        if cacert is not None:
            self._ssl = ssl.create_default_context(cafile=str(cacert))
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        self.token: str | None = None

    async def __aenter__(self) -> IamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(
        self, method: str, path: str, *, auth: bool = True, **kw: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        last: Exception | None = None
        for url in self.urls:
            try:
                async with self._session.request(
                    method, url + path, headers=headers, ssl=self._ssl, **kw
                ) as r:
                    if r.content_type == "application/json":
                        return r.status, await r.json()
                    return r.status, await r.text()
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                last = exc
        raise ConnectionError(f"no IAM node answered ({', '.join(self.urls)}): {last}")

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        """An API call; raises :class:`IamApiError` on a 4xx/5xx answer."""
        status, body = await self._send(method, path, **kw)
        if status >= 400:
            raise IamApiError(status, body)
        return body

    async def login(self, form: dict[str, str]) -> dict[str, Any]:
        """POST the token endpoint with ``form``; keeps the access token for later calls."""
        body = await self.call("POST", "/oauth2/token", data=form, auth=False)
        self.token = str(body["access_token"])
        return dict(body)

    async def login_admin(self, creds: AdminCredentials) -> dict[str, Any]:
        """Client-credentials login as the bootstrap admin's service account."""
        return await self.login(
            {
                "grant_type": "client_credentials",
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
            }
        )

    async def list_all(self, path: str, limit: int = 500) -> list[dict[str, Any]]:
        """Follow ``next_page_token`` through a paginated listing (at most 100 pages)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(100):
            params = {"limit": str(limit), **({"page_token": token} if token else {})}
            page = await self.call("GET", path, params=params)
            items += page["items"]
            token = page.get("next_page_token")
            if not token:
                break
        return items

    async def close(self) -> None:
        await self._session.close()
