"""Generated etcd v3.4 wire-compatible protobuf/gRPC modules (run `make protos`)."""
