"""Charts' data: each Raft group's write rate and fsync latency per node over the last
minutes, sampled from the services' own /metrics (no Prometheus needed).

Every :data:`SAMPLE_S` seconds the sampler reads ``raft_proposals_committed_total`` and
the ``raft_fsync_duration_seconds`` histogram's sum and count of Chainfire and FlareDB on
every node; a point is the difference between two samples: entries committed per second,
and the mean log fsync (the disk wait of every commit) in milliseconds. A restarted
service's counters start again from zero: that interval gives no point.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from plasmacloud.cluster.probe import http_get
from plasmacloud.cluster.services import CHAINFIRE, FLAREDB
from plasmacloud.cluster.target import ClusterTarget

SAMPLE_S = 2.0
KEEP = 150  # points per series: 5 minutes
COMMITTED = "raft_proposals_committed_total"
FSYNC_SUM = "raft_fsync_duration_seconds_sum"
FSYNC_COUNT = "raft_fsync_duration_seconds_count"


@dataclass(frozen=True)
class Sample:
    """One scrape of one service on one node: the counters the points are made of."""

    at: float  # wall clock, seconds
    committed: float
    fsync_sum: float
    fsync_count: float


def parse_sample(text: str, at: float) -> Sample | None:
    """The counters out of a Prometheus text exposition (None if any is missing)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in (COMMITTED, FSYNC_SUM, FSYNC_COUNT) and not s.labels:
                values[s.name] = s.value
    if len(values) < 3:
        return None
    return Sample(at, values[COMMITTED], values[FSYNC_SUM], values[FSYNC_COUNT])


def point(before: Sample, after: Sample) -> list[float | None] | None:
    """[time, committed per second, mean fsync ms] between two samples; None across a
    restart (counters went back) or without time between them."""
    span = after.at - before.at
    commits, fsyncs = after.committed - before.committed, after.fsync_count - before.fsync_count
    if span <= 0 or commits < 0 or fsyncs < 0:
        return None
    fsync_ms = (after.fsync_sum - before.fsync_sum) / fsyncs * 1000 if fsyncs else None
    return [round(after.at, 3), round(commits / span, 2), fsync_ms and round(fsync_ms, 3)]


class Series:
    """The points of one service on one node, and its last sample."""

    def __init__(self) -> None:
        self.last: Sample | None = None
        self.points: deque[list[float | None]] = deque(maxlen=KEEP)

    def add(self, sample: Sample | None, at: float) -> None:
        """Add a scrape made at ``at``; None (it failed) puts a gap in the line, so a
        down node shows no rate rather than its last one."""
        if sample is None:
            if self.points and self.points[-1][1] is not None:
                self.points.append([round(at, 3), None, None])
        elif self.last is not None and (p := point(self.last, sample)):
            self.points.append(p)
        self.last = sample  # never average over a failed scrape


class Sampler:
    """Scrapes every Raft service of every node each :data:`SAMPLE_S` seconds while the
    dashboard runs."""

    def __init__(self, target: ClusterTarget) -> None:
        self.target = target
        self.series: dict[tuple[str, str], Series] = {}

    async def _scrape(self, url: str) -> Sample | None:
        try:
            status, body = await http_get(url, self.target.ssl_ctx)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
        return parse_sample(body, time.time()) if status == 200 else None

    async def sample(self) -> None:
        """One scrape of every series, concurrently."""
        wanted = [
            (s.name, c.node_id, s.metrics_url(c))
            for s in (CHAINFIRE, FLAREDB)
            if self.target.runs(s.name) and s.metrics_url
            for c in self.target.configs
        ]
        samples = await asyncio.gather(*(self._scrape(url) for _s, _n, url in wanted))
        now = time.time()
        for (service, node, _url), sample in zip(wanted, samples, strict=True):
            self.series.setdefault((service, node), Series()).add(sample, now)

    def doc(self) -> dict[str, Any]:
        """Every series' points, oldest first: [time, committed/s, fsync ms] (None: a gap)."""
        return {
            "sample_s": SAMPLE_S,
            "window_s": SAMPLE_S * KEEP,
            "series": [
                {"service": s, "node": n, "points": list(series.points)}
                for (s, n), series in sorted(self.series.items())
            ],
        }

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Sample in the background until the block ends."""

        async def loop() -> None:
            while True:
                await self.sample()
                await asyncio.sleep(SAMPLE_S)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
