"""``layerlake.metrics`` stays pure: it never imports store, ingest or queries (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import layerlake.metrics

PACKAGE_DIR = Path(layerlake.metrics.__file__).parent
FORBIDDEN = tuple(f"layerlake.{name}" for name in ("store", "ingest", "queries"))
MODULES = sorted(PACKAGE_DIR.rglob("*.py"))


def absolute_imports(source: str, package: str) -> list[str]:
    """Every name imported by ``source``, relative imports resolved against ``package``."""
    parts = package.split(".")
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def forbidden(names: list[str]) -> list[str]:
    return [n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_metrics_module_imports_no_forbidden_package(path: Path) -> None:
    sub = path.parent.relative_to(PACKAGE_DIR).parts
    package = ".".join(("layerlake", "metrics", *sub))
    bad = forbidden(absolute_imports(path.read_text(), package))
    assert not bad, f"{path.name} imports {bad}; layerlake.metrics must stay pure"


def test_checker_resolves_relative_and_absolute_imports() -> None:
    source = "from ..store import x\nfrom .. import ingest\nimport layerlake.queries.engine\nfrom . import entropy\n"
    assert forbidden(absolute_imports(source, "layerlake.metrics")) == [
        "layerlake.store",
        "layerlake.store.x",
        "layerlake.ingest",
        "layerlake.queries.engine",
    ]
