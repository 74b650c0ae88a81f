"""IAM's stores by name (``plasma iam serve --store``, ``plasma iam bootstrap --store``)."""

from __future__ import annotations

from plasmacloud.common.config import NodeConfig
from plasmacloud.iam.store import KVStore, MemoryStore


def open_store(config: NodeConfig, kind: str = "chainfire") -> KVStore:
    """IAM's store by name: ``chainfire`` (production: Chainfire's system keyspace, which
    no etcd client can reach), ``etcd`` (the public etcd v3 API, for IAM on a real etcd)
    or ``memory`` (one process, development)."""
    # gRPC stubs imported only when a store needs them
    if kind == "chainfire":
        from plasmacloud.iam.system_store import ChainfireSystemStore

        return ChainfireSystemStore.from_config(config)
    if kind == "etcd":
        from plasmacloud.iam.etcd_store import EtcdStore

        return EtcdStore.from_config(config)
    if kind == "memory":
        return MemoryStore()
    raise ValueError(f"unknown IAM store {kind!r}: chainfire, etcd or memory")
