"""The CRUD round both stores' checks share, judged against an in-memory store whose
nodes can miss a write, miss a delete or fail a read (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

from plasmacloud.cluster.target import ClusterTarget
from plasmacloud.common.config import NodeConfig
from plasmacloud.lab.layout import LabLayout
from plasmacloud.lab.services import CHAINFIRE
from plasmacloud.lab.spec import LabSpec
from plasmacloud.validate.crud import CrudOps, crud_round
from plasmacloud.validate.results import NodeResult


class Down(Exception):
    """What a node of the fake store raises when it does not answer."""


class FakeStore:
    """One value per node; a write or delete reaches only the nodes not told to miss it."""

    def __init__(
        self,
        node_ids: list[str],
        miss_write: frozenset[str] = frozenset(),
        miss_delete: frozenset[str] = frozenset(),
        down: frozenset[str] = frozenset(),
    ) -> None:
        self.items: dict[str, str | None] = dict.fromkeys(node_ids)
        self.miss_write, self.miss_delete, self.down = miss_write, miss_delete, down

    def ops(self, value: str) -> CrudOps[str, Down]:
        async def write() -> str:
            for n in self.items:
                if n not in self.miss_write:
                    self.items[n] = value
            return "wrote"

        async def read(node: NodeConfig) -> str | None:
            if node.node_id in self.down:
                raise Down(f"{node.node_id} is down")
            return self.items[node.node_id]

        async def delete() -> int:
            for n in self.items:
                if n not in self.miss_delete:
                    self.items[n] = None
            return 1

        return CrudOps[str, Down](
            write=write,
            read=read,
            delete=delete,
            failure=Down,
            describe=lambda exc: f"failed: {exc}",
            describe_read=lambda exc: f"error: {exc}",
        )


def target(tmp_path: Path) -> ClusterTarget:
    layout, spec = LabLayout(tmp_path), LabSpec()
    configs = [layout.node_config(spec, n) for n in spec.node_ids]
    return ClusterTarget("test", configs, layout.operator_tls(spec), (CHAINFIRE,))


async def round_with(t: ClusterTarget, store: FakeStore) -> NodeResult:
    return await crud_round(t, t.configs[0], "v1", store.ops("v1"))


async def test_a_round_that_reaches_every_node_passes(tmp_path: Path) -> None:
    t = target(tmp_path)
    result = await round_with(t, FakeStore([c.node_id for c in t.configs]))
    assert result == NodeResult(
        t.configs[0].node_id,
        True,
        "wrote, linearizable read on 3/3 nodes, deleted 1, still there on 0",
    )


async def test_stale_and_failed_reads_and_a_kept_item_are_named(tmp_path: Path) -> None:
    t = target(tmp_path)
    a, b, c = (cfg.node_id for cfg in t.configs)
    store = FakeStore([a, b, c], miss_write=frozenset({b}), down=frozenset({c}))
    result = await round_with(t, store)
    assert not result.ok
    assert result.evidence.startswith("wrote, linearizable read on 1/3 nodes (wrong: ")
    assert f"'{b}': None" in result.evidence and f"'{c}': 'error: {c} is down'" in result.evidence

    store = FakeStore([a, b, c], miss_delete=frozenset({b}))
    result = await round_with(t, store)
    assert not result.ok
    assert result.evidence.endswith(f"deleted 1, still there on 1 ({{'{b}': 'v1'}})")


async def test_a_failed_write_is_the_whole_evidence(tmp_path: Path) -> None:
    t = target(tmp_path)
    store = FakeStore([cfg.node_id for cfg in t.configs])
    ops = store.ops("v1")

    async def refused() -> str:
        raise Down("no leader")

    result = await crud_round(
        t,
        t.configs[0],
        "v1",
        CrudOps[str, Down](refused, ops.read, ops.delete, Down, ops.describe, ops.describe_read),
    )
    assert result == NodeResult(t.configs[0].node_id, False, "failed: no leader")
