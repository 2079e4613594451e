"""The folder tree is the architecture: imports point one way (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "layerlake"

FORBIDDEN = {
    "store": {"torch", "transformers", "layerlake.ingest", "layerlake.queries", "layerlake.metrics", "duckdb",
              "polars"},
    "metrics": {"layerlake.store", "layerlake.ingest", "layerlake.queries", "torch", "transformers", "duckdb",
                "polars", "zarr"},
    "ingest": {"layerlake.queries", "duckdb"},
    "queries": {"layerlake.ingest", "transformers"},
}


def _imports(path: Path, part: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against layerlake.<part>.<...>
                base = ["layerlake", part][: max(0, 2 - (node.level - 1))]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
    return found


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_dependencies_point_one_way(part):
    bad = []
    for path in (PKG / part).rglob("*.py"):
        for mod in _imports(path, part):
            if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN[part]):
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert not bad, "\n".join(bad)
