"""The charts' points from the services' own metrics: committed entries per second and
the mean log fsync between two scrapes, nothing across a restart or a failed scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from plasmacloud.dashboard.metrics import Sample, Series, parse_sample, point
from plasmacloud.raft.metrics import RaftMetrics


def _exposition(committed: int, fsyncs: list[float]) -> str:
    """What a Raft service's /metrics says after ``committed`` commits and these fsyncs."""
    registry = CollectorRegistry()
    metrics = RaftMetrics(registry)
    metrics.committed.inc(committed)
    for seconds in fsyncs:
        metrics.fsync.observe(seconds)
    return generate_latest(registry).decode()


def test_a_scrape_becomes_a_sample() -> None:
    sample = parse_sample(_exposition(40, [0.002, 0.004]), at=100.0)
    assert sample == Sample(100.0, 40.0, 0.006, 2.0)
    assert parse_sample("# nothing here\n", at=1.0) is None


def test_points_are_rates_and_mean_fsync_between_samples() -> None:
    before = Sample(100.0, 40.0, 0.006, 2.0)
    after = Sample(102.0, 140.0, 0.106, 12.0)
    assert point(before, after) == [102.0, 50.0, 10.0]  # 100 entries in 2 s, 0.1 s / 10
    idle = Sample(104.0, 140.0, 0.106, 12.0)
    assert point(after, idle) == [104.0, 0.0, None]  # no fsync: no latency to show
    restarted = Sample(106.0, 3.0, 0.001, 1.0)
    assert point(idle, restarted) is None


def test_a_failed_scrape_breaks_the_line() -> None:
    series = Series()
    for at, sample in (
        (0.0, Sample(0.0, 0.0, 0.0, 0.0)),
        (2.0, Sample(2.0, 10.0, 0.01, 5.0)),
        (4.0, None),  # the node did not answer: a gap, its last rate is not "now"
        (5.0, None),
        (6.0, Sample(6.0, 30.0, 0.02, 10.0)),
        (8.0, Sample(8.0, 50.0, 0.03, 15.0)),
    ):
        series.add(sample, at)
    assert list(series.points) == [[2.0, 5.0, 2.0], [4.0, None, None], [8.0, 10.0, 2.0]]
