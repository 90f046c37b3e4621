"""The project's import graph, computed with the standard library (``ast``), for the guard rails.

Every ``import`` and ``from … import`` counts, at module level or inside a function (a lazy import
that closes a cycle is still a cycle); only the bodies of ``if TYPE_CHECKING:`` blocks are left
out, since they never run. Also run as a script it prints the figures quoted in
docs/architecture.md: ``python tests/architecture/importgraph.py``.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("core", "models", "ingest", "rag", "finetune", "compare", "demo")


@dataclass(frozen=True)
class Import:
    """One import statement's target inside the project."""

    importer: str  # module that imports
    target: str  # module imported (the longest project module the name resolves to)
    names: tuple[str, ...]  # names taken with ``from … import`` (empty for ``import x``)
    line: int


def library_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every library package present under ``root``."""
    out: dict[str, Path] = {}
    for package in LIBRARY:
        base = root / package
        if not (base / "__init__.py").is_file():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.AST) -> list[ast.stmt]:
    """Every import statement, TYPE_CHECKING bodies excepted (their ``else`` still counts)."""
    found: list[ast.stmt] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that ``name`` (dotted) names or lies in."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports(modules: dict[str, Path] | None = None) -> list[Import]:
    """Every project-internal import of every library module."""
    modules = modules if modules is not None else library_modules()
    out: list[Import] = []
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _statements(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, modules)
                    if target:
                        out.append(Import(module, target, (), node.lineno))
                continue
            assert isinstance(node, ast.ImportFrom)
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from pkg import mod`` imports the submodule pkg.mod when there is one
                target = _resolve(f"{base}.{alias.name}", modules) or _resolve(base, modules)
                if target:
                    names = () if target == f"{base}.{alias.name}" else (alias.name,)
                    out.append(Import(module, target, names, node.lineno))
    return out


def graph(found: list[Import]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (itself and its own package excluded)."""
    edges: dict[str, set[str]] = {}
    for imp in found:
        if imp.target != imp.importer and not imp.importer.startswith(imp.target + "."):
            edges.setdefault(imp.importer, set()).add(imp.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return sorted(out)


def top(module: str) -> str:
    """The top-level package of a dotted module name."""
    return module.split(".")[0]


def private_cross_imports(found: list[Import]) -> list[Import]:
    """Imports of a ``_private`` name (or module) that another top-level package owns."""
    out = []
    for imp in found:
        if top(imp.importer) == top(imp.target):
            continue
        private_module = any(p.startswith("_") and not p.startswith("__")
                             for p in imp.target.split("."))
        private_name = any(n.startswith("_") and not n.startswith("__") for n in imp.names)
        if private_module or private_name:
            out.append(imp)
    return out


def package_edges(found: list[Import]) -> dict[str, set[str]]:
    """Top-level package -> the other top-level packages it imports."""
    edges: dict[str, set[str]] = {}
    for imp in found:
        a, b = top(imp.importer), top(imp.target)
        if a != b:
            edges.setdefault(a, set()).add(b)
    return edges


def main() -> int:
    """Print modules, library lines, cycles and private cross-package imports."""
    modules = library_modules()
    found = imports(modules)
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in modules.values())
    found_cycles = cycles(graph(found))
    private = private_cross_imports(found)
    out = [f"library modules: {len(modules)}", f"library lines: {lines}",
           f"import cycles: {len(found_cycles)}"]
    out += ["  " + " <-> ".join(c) for c in found_cycles]
    out.append(f"cross-package private imports: {len(private)}")
    out += [f"  {i.importer}:{i.line} -> {i.target} {', '.join(i.names)}" for i in private]
    out.append("package dependencies:")
    out += [f"  {a} -> {', '.join(sorted(b))}" for a, b in sorted(package_edges(found).items())]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
