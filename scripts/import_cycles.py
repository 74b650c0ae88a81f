"""List the import cycles between plasmacloud's top-level packages (issue 14).

Every import counts, including those inside functions and under TYPE_CHECKING: a lazy
import is still a dependency. Prints each package-level edge with one example import,
then every elementary cycle. Exit status 1 when there is a cycle, so CI could gate on it
(import-linter's contracts are the gate; this script is for measuring).

    PYTHONPATH=src python3 scripts/import_cycles.py
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import grimp

ROOT = "plasmacloud"


def package_edges(graph: grimp.ImportGraph) -> dict[tuple[str, str], str]:
    """(importer package, imported package) -> one example `module -> module` import."""
    edges: dict[tuple[str, str], str] = {}
    for module in sorted(graph.modules):
        parts = module.split(".")
        if len(parts) < 2:
            continue
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            target = imported.split(".")
            if len(target) < 2 or target[0] != ROOT or target[1] == parts[1]:
                continue
            edges.setdefault((parts[1], target[1]), f"{module} -> {imported}")
    return edges


def elementary_cycles(nodes: list[str], succ: dict[str, set[str]]) -> Iterator[list[str]]:
    """Each simple cycle once, starting from its smallest node (fine for a dozen nodes)."""
    for start in nodes:

        def walk(path: list[str], start: str = start) -> Iterator[list[str]]:
            for nxt in sorted(succ.get(path[-1], ())):
                if nxt == start:
                    yield list(path)
                elif nxt > start and nxt not in path:
                    yield from walk([*path, nxt])

        yield from walk([start])


def main() -> int:
    graph = grimp.build_graph(ROOT, cache_dir=None)
    edges = package_edges(graph)
    succ: dict[str, set[str]] = {}
    for importer, imported in edges:
        succ.setdefault(importer, set()).add(imported)
    nodes = sorted({p for edge in edges for p in edge})
    print(f"package edges ({len(edges)}):")
    for (importer, imported), example in sorted(edges.items()):
        print(f"  {importer} -> {imported}    e.g. {example}")
    cycles = list(elementary_cycles(nodes, succ))
    print(f"package cycles ({len(cycles)}):")
    for cycle in cycles:
        print("  " + " -> ".join([*cycle, cycle[0]]))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
