"""The etcd v3 gRPC services of one Chainfire member (one module per etcd service)."""
