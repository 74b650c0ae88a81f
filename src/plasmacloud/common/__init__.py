"""Shared building blocks: config models, TLS contexts, logging, metrics helpers."""
