"""IAM fixtures (defined in iam_fixtures.py, which test modules import for the types)."""

from __future__ import annotations

from iam_fixtures import etcd_endpoint, iam_cluster, tls_iam

__all__ = ["etcd_endpoint", "iam_cluster", "tls_iam"]
