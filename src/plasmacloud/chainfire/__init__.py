"""Chainfire: Raft-replicated coordination KV store speaking the etcd v3 gRPC API."""
