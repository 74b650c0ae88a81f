"""Prometheus metrics of one IAM server (own registry, so several can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class IamMetrics:
    """The counters and histograms ``/metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "iam_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "iam_authz_decisions",
            "Authorization decisions by effect",
            ["effect"],
            registry=self.registry,
        )
        self.tokens_issued = Counter(
            "iam_tokens_issued",
            "Access tokens issued by grant type",
            ["grant_type"],
            registry=self.registry,
        )
        self.login_failures = Counter(
            "iam_login_failures",
            "Refused token requests by reason",
            ["reason"],
            registry=self.registry,
        )
        self.verify_seconds = Histogram(
            "iam_token_verify_seconds",
            "Time to verify a bearer token",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5),
        )
