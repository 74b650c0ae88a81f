"""HTTP calls from a service to IAM, failing over across the IAM nodes' URLs."""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp


class IamUpstream:
    """GETs JSON from the first IAM URL that answers, remembering which one did."""

    def __init__(self, urls: Sequence[str], ssl_context: ssl.SSLContext | None, timeout: float):
        if not urls:
            raise ValueError("at least one IAM URL is required")
        self._urls = [u.rstrip("/") for u in urls]
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._preferred = 0

    async def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        form: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``(status, JSON body)`` from the first IAM URL that answers below 500."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        errors = []
        n = len(self._urls)
        for i in range(n):
            idx = (self._preferred + i) % n
            url = self._urls[idx] + path
            try:
                async with self._session.request(
                    method, url, headers=headers, data=form, json=body, ssl=self._ssl or True
                ) as resp:
                    if resp.status >= 500:
                        errors.append(f"{url}: HTTP {resp.status}")
                        continue
                    self._preferred = idx
                    if resp.content_type != "application/json":
                        return resp.status, {"error": await resp.text()}
                    return resp.status, await resp.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{url}: {exc!r}")
        raise IamUnavailable("; ".join(errors))

    async def get_json(self, path: str, token: str | None = None) -> Any:
        """GET that must answer 200 (:class:`IamRefused` otherwise)."""
        status, body = await self.request("GET", path, token=token)
        if status != 200:
            raise IamRefused(status, str(body))
        return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class IamUnavailable(Exception):
    """No IAM URL answered."""


class IamRefused(Exception):
    """IAM answered with a 4xx (e.g. the token presented for policy lookup was refused)."""

    def __init__(self, status: int, body: str):
        self.status = status
        super().__init__(f"IAM answered HTTP {status}: {body[:200]}")
