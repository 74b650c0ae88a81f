"""Shipping a service's authorization decisions to IAM's audit log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Sequence

from plasmacloud.iam.principal import AuditRecord
from plasmacloud.iam.upstream import IamRefused, IamUnavailable, IamUpstream

log = logging.getLogger(__name__)


class AuditShipper:
    """Sends a service's decisions to IAM's audit log (``POST /v1/audit``) in batches.

    Use an instance as the Verifier's ``audit`` callback and run :meth:`run` beside the
    service. The buffer is bounded: while IAM is unreachable the oldest records are
    dropped (and counted in ``dropped``) rather than growing memory without limit.
    """

    def __init__(
        self,
        iam_urls: Sequence[str],
        client_id: str,
        client_secret: str,
        source: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        http_timeout: float = 3.0,
    ):
        self._upstream = IamUpstream(iam_urls, ssl_context, http_timeout)
        self._creds = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        self._source = source
        self._buffer: deque[AuditRecord] = deque(maxlen=max_buffer)
        self._batch = batch_size
        self._token: str | None = None
        self.dropped = 0
        self.sent = 0

    def __call__(self, record: AuditRecord) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(record)

    async def _login(self) -> str:
        status, body = await self._upstream.request("POST", "/oauth2/token", form=self._creds)
        if status != 200:
            raise IamRefused(status, str(body))
        self._token = str(body["access_token"])
        return self._token

    async def flush(self) -> int:
        """Send everything buffered now; returns how many records IAM accepted."""
        sent = 0
        while self._buffer:
            batch = [self._buffer[i] for i in range(min(self._batch, len(self._buffer)))]
            payload = {
                "source": self._source,
                "records": [
                    {"at": r.at, "sub": r.sub, "action": r.action, "resource": r.resource,
                     **r.decision.to_json()}
                    for r in batch
                ],
            }  # fmt: skip
            token = self._token or await self._login()
            status, body = await self._upstream.request("POST", "/v1/audit", token, body=payload)
            if status == 401:  # token expired: log in again once
                token = await self._login()
                status, body = await self._upstream.request(
                    "POST", "/v1/audit", token, body=payload
                )
            if status != 201:
                raise IamRefused(status, str(body))
            for _ in batch:
                self._buffer.popleft()
            sent += len(batch)
        self.sent += sent
        return sent

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds until ``stop`` is set (then once more)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            try:
                await self.flush()
            except (IamUnavailable, IamRefused) as exc:
                log.warning(
                    "audit records not shipped yet (%d buffered): %s", len(self._buffer), exc
                )
            if stop.is_set():
                return

    async def close(self) -> None:
        await self._upstream.close()
