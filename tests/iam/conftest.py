"""IAM fixtures (defined in iam_fixtures.py, which test modules import for the types)."""

from __future__ import annotations

from iam_fixtures import iam_cluster

__all__ = ["iam_cluster"]
