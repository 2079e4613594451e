"""The folder tree is the architecture: imports point one way (docs/architecture.md).

The import graph is read from the AST of every module of ``layerlake`` (imports at
any depth, function-level and ``if TYPE_CHECKING:`` ones included: a type-only
import is still a dependency between the two modules).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    """One imported thing: ``module`` (absolute, resolved), and ``name`` for ``from module import name``."""

    source: str
    line: int
    module: str
    name: str | None = None
    bound: str | None = None  # the local name it is bound to, when that name is the imported thing itself

    @property
    def where(self) -> str:
        return f"{MODULES[self.source].relative_to(PKG.parent)}:{self.line}"

    @property
    def target(self) -> str | None:
        """The layerlake module this import loads (a submodule named by ``from pkg import sub`` counts as it)."""
        if self.name and f"{self.module}.{self.name}" in MODULES:
            return f"{self.module}.{self.name}"
        mod = self.module
        while mod and mod not in MODULES:
            mod = mod.rpartition(".")[0]
        return mod or None


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, node.lineno, alias.name, bound=alias.asname)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module).split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                yield Import(module, node.lineno, mod, alias.name, bound=alias.asname or alias.name)


IMPORTS: list[Import] = [imp for m in MODULES for imp in imports_of(m)]


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_dependencies_point_one_way(part):
    bad = []
    for imp in IMPORTS:
        if _part(imp.source) != part:
            continue
        for mod in {imp.module, f"{imp.module}.{imp.name}" if imp.name else imp.module}:
            if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN[part]):
                bad.append(f"{imp.where} imports {mod}")
                break
    assert not bad, "\n".join(bad)


def test_only_the_command_line_imports_the_command_line():
    bad = [f"{imp.where} imports {imp.target}" for imp in IMPORTS
           if imp.target and (imp.target == "layerlake.cli" or imp.target.startswith("layerlake.cli."))
           and _part(imp.source) != "cli" and imp.source != "layerlake.__main__"]
    assert not bad, "library modules must not depend on the CLI:\n" + "\n".join(bad)


def test_only_the_command_line_writes_to_stdout():
    """Library code logs; ``print`` and ``sys.stdout`` belong to ``layerlake/cli/`` (and ``__main__``)."""
    bad = []
    for module, path in MODULES.items():
        if _part(module) == "cli" or module == "layerlake.__main__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno} calls print()")
            elif isinstance(node, ast.Attribute) and node.attr == "stdout" and isinstance(node.value, ast.Name) \
                    and node.value.id == "sys":
                bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno} uses sys.stdout")
    assert not bad, "\n".join(bad)


# store modules that are part of the package's interface (re-exported as a namespace by store/__init__)
PUBLIC_STORE_MODULES = {"layerlake.store.layout"}


def test_store_is_entered_through_its_package():
    """Outside ``layerlake/store/`` only ``layerlake.store`` itself is imported, never ``layerlake.store.<module>``."""
    bad = sorted({f"{imp.where} imports {imp.target}" for imp in IMPORTS
                 if imp.target and imp.target.startswith("layerlake.store.") and _part(imp.source) != "store"
                 and imp.target not in PUBLIC_STORE_MODULES})
    assert not bad, f"{len(bad)} import(s) of store internals (add the name to store/__init__.py):\n" + "\n".join(bad)


def _private_part(dotted: list[str], source: str) -> str | None:
    """The first ``_name`` in ``dotted`` that ``source`` sees from outside its owner, else None.

    A private name belongs to the module or package that holds it: ``layerlake.store`` may
    import its own ``layerlake.store._impl`` (private modules re-exported by the package).
    """
    for i, part in enumerate(dotted):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            owner = ".".join(dotted[:i])
            if source != owner and not source.startswith(owner + "."):
                return ".".join(dotted[: i + 1])
    return None


def test_no_private_names_cross_modules():
    """No module imports another module's ``_private`` name, nor reaches it through an imported module."""
    bad = []
    for imp in IMPORTS:
        found = _private_part(imp.module.split(".") + ([imp.name] if imp.name else []), imp.source)
        if found:
            bad.append(f"{imp.where} imports {found}")
    for module, path in MODULES.items():
        aliases = {imp.bound: imp.target for imp in IMPORTS if imp.source == module and imp.bound
                   and imp.target == (f"{imp.module}.{imp.name}" if imp.name else imp.module)}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                found = _private_part([*aliases[node.value.id].split("."), node.attr], module)
                if found:
                    bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno} uses {found}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(set(bad)))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import), each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    where: dict[tuple[str, str], list[str]] = {}
    for imp in IMPORTS:
        t = imp.target
        if t is None or t == imp.source:
            continue
        graph[imp.source].add(t)
        where.setdefault((imp.source, t), []).append(imp.where)
    return graph, where


def test_cycle_finder_reports_each_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d", "a"}, "e": {"f"}, "f": set()}
    assert _cycles(graph) == [["a", "b", "c"], ["d"]]


def test_import_resolution():
    sources = {(imp.module, imp.name): imp.target for imp in IMPORTS if imp.source == "layerlake.lake"}
    assert sources[("layerlake.store", "JacobianSketch")] == "layerlake.store"
    assert ("layerlake.queries.engine", "QueryEngine") in sources


def test_no_import_cycles():
    graph, where = import_graph()
    report = []
    for comp in _cycles(graph):
        edges = [f"    {a} -> {b}  ({', '.join(sorted(set(where[(a, b)])))})" for a in comp for b in sorted(graph[a]) if b in comp]
        report.append(f"cycle between {', '.join(comp)}:\n" + "\n".join(edges))
    assert not report, f"{len(report)} import cycle(s):\n" + "\n".join(report)
