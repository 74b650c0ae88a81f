"""Consensus engine: log, durable storage, elections, replication, snapshots, membership."""
