"""The import graph between ``services`` packages (and ``workers`` modules), and its cycles.

``python -m infra.tools.import_graph`` prints one line per edge ``a -> b`` (a imports b, directly)
and then every cycle between packages, found with the same graph ``lint-imports`` reads. Run it on
any checkout to compare the house before and after a change.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from itertools import combinations

import grimp


def package_of(module: str, root: str) -> str:
    """``services.jobs.store`` -> ``services.jobs``; a top-level module names itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == root and len(parts) > 1 else module


def edges(graph: grimp.ImportGraph, root: str) -> set[tuple[str, str]]:
    """Package-level direct imports inside ``root`` (self-imports left out)."""
    found = set()
    for module in graph.find_descendants(root):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.split(".")[0] != root:
                continue
            a, b = package_of(module, root), package_of(imported, root)
            if a != b:
                found.add((a, b))
    return found


def cycles(pairs: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs of packages that reach each other (directly or through others)."""
    reach: dict[str, set[str]] = {}
    for a, b in pairs:
        reach.setdefault(a, set()).add(b)
    changed = True
    while changed:  # transitive closure: small graphs, so the plain fixed point will do
        changed = False
        for targets in reach.values():
            extra = set().union(*(reach.get(t, set()) for t in targets)) - targets
            if extra:
                targets |= extra
                changed = True
    nodes = sorted(reach)
    return [(a, b) for a, b in combinations(nodes, 2) if b in reach[a] and a in reach.get(b, ())]


def report(roots: Iterable[str]) -> list[str]:
    lines = []
    for root in roots:
        graph = grimp.build_graph(root)
        pairs = edges(graph, root)
        lines += [f"{a} -> {b}" for a, b in sorted(pairs)]
        found = cycles(pairs)
        lines += [f"CYCLE {a} <-> {b}" for a, b in found]
        lines.append(f"{root}: {len(pairs)} edges between packages, {len(found)} cyclic pairs")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", default=["services", "workers"])
    args = parser.parse_args(argv)
    sys.path.insert(0, ".")
    print("\n".join(report(args.roots)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
