"""Shipping a service's authorization decisions to IAM's audit log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from plasmacloud.iam.principal import AuditRecord
from plasmacloud.iam.upstream import IamRefused, IamUnavailable, IamUpstream

log = logging.getLogger(__name__)

# IAM answers these when a batch itself is unacceptable: retrying it would never succeed
# and would hold up every record behind it, so such a batch is dropped (and counted).
_REJECTED_BATCH = frozenset({400, 413, 422})


class AuditShipper:
    """Sends a service's decisions to IAM's audit log (``POST /v1/audit``) in batches.

    Use an instance as the Verifier's ``audit`` callback, :meth:`start` it beside the
    service and :meth:`close` it on the way out. It authenticates with the client
    certificate of ``ssl_context``: IAM accepts audit records without a token from a
    certificate whose CN is a node id of the cluster, and records them under
    ``<service>@<that node>``. Recording a decision never waits for IAM: the buffer is
    bounded, and while IAM is unreachable the oldest records are dropped and counted
    (``plasma_audit_records_dropped_total``) rather than growing memory without limit.
    Records hold who, action, resource and the decision, never a token.
    """

    def __init__(
        self,
        iam_urls: Sequence[str],
        source: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        registry: CollectorRegistry | None = None,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        http_timeout: float = 3.0,
    ):
        self._upstream = IamUpstream(iam_urls, ssl_context, http_timeout)
        self._source = source
        self._buffer: deque[AuditRecord] = deque(maxlen=max_buffer)
        self._batch = batch_size
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.registry = registry or CollectorRegistry()
        self._sent = Counter(
            "plasma_audit_records_shipped",
            "Authorization decisions delivered to IAM's audit log",
            registry=self.registry,
        )
        self._dropped = Counter(
            "plasma_audit_records_dropped",
            "Authorization decisions lost (buffer full while IAM was unreachable, or refused)",
            registry=self.registry,
        )
        Gauge(
            "plasma_audit_records_buffered",
            "Authorization decisions waiting to be shipped to IAM",
            registry=self.registry,
        ).set_function(lambda: len(self._buffer))

    @property
    def sent(self) -> int:
        """Records IAM has accepted so far."""
        return int(self.registry.get_sample_value("plasma_audit_records_shipped_total") or 0)

    @property
    def dropped(self) -> int:
        """Records lost so far (buffer overflow or a batch IAM refused)."""
        return int(self.registry.get_sample_value("plasma_audit_records_dropped_total") or 0)

    @property
    def buffered(self) -> int:
        """Records waiting to be shipped."""
        return len(self._buffer)

    def __call__(self, record: AuditRecord) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self._dropped.inc()
        self._buffer.append(record)

    async def flush(self) -> int:
        """Send what is buffered now (records arriving meanwhile wait for the next flush);
        returns how many records IAM accepted."""
        sent = 0
        todo = len(self._buffer)
        while todo > 0 and self._buffer:
            batch = [self._buffer[i] for i in range(min(self._batch, todo, len(self._buffer)))]
            payload = {
                "source": self._source,
                "records": [
                    {"at": r.at, "sub": r.sub, "action": r.action, "resource": r.resource,
                     **r.decision.to_json()}
                    for r in batch
                ],
            }  # fmt: skip
            status, body = await self._upstream.request("POST", "/v1/audit", body=payload)
            if status != 201 and status not in _REJECTED_BATCH:
                raise IamRefused(status, str(body))
            for _ in batch:
                self._buffer.popleft()
            todo -= len(batch)
            if status == 201:
                sent += len(batch)
                self._sent.inc(len(batch))
            else:
                self._dropped.inc(len(batch))
                log.error("IAM refused %d audit records: HTTP %d %s", len(batch), status, body)
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

    def start(self, interval: float = 1.0) -> None:
        """Ship in the background (inside the running event loop) until :meth:`close`."""
        self._task = asyncio.create_task(self.run(self._stop, interval))

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the background task after one last flush (bounded by ``timeout``)."""
        if self._task is not None:
            self._stop.set()
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                log.warning("audit shipper stopped with %d records unsent", len(self._buffer))
            self._task = None
        await self._upstream.close()
