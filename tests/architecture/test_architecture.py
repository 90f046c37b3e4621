"""Guard rails for the architecture (docs/architecture.md): one-way dependencies between the rooms,
no import cycles (lazy imports count), no private names taken from another package, and no
import-time side effects."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("importgraph", HERE / "importgraph.py")
assert _spec is not None and _spec.loader is not None
ig = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("importgraph", ig)
_spec.loader.exec_module(ig)

# Each room and the rooms it may import (docs/architecture.md): dependencies point one way.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "models": {"core"},
    "ingest": {"core", "models"},
    "rag": {"core", "models", "ingest"},
    "finetune": {"core", "models", "ingest", "rag"},
    "compare": {"core", "models", "ingest", "rag", "finetune"},
    "demo": {"core", "models", "ingest", "rag", "finetune", "compare"},
}


@pytest.fixture(scope="module")
def found() -> list:
    return ig.imports(ig.library_modules())


def test_the_graph_sees_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "core"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from core import b\n    return b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from core.c import X\nelse:\n    import core.a\n")
    (pkg / "c.py").write_text("from .a import f\nfrom core.b import _hidden\n")
    modules = ig.library_modules(tmp_path)
    found = ig.imports(modules)
    edges = ig.graph(found)
    assert edges["core.a"] == {"core.b"} and edges["core.b"] == {"core.a"}
    assert edges["core.c"] == {"core.a", "core.b"}
    assert ig.cycles(edges) == [["core.a", "core.b"]]
    hidden = [i for i in found if i.importer == "core.c" and i.target == "core.b"]
    assert hidden[0].names == ("_hidden",)


def test_no_import_cycles(found: list) -> None:
    assert ig.cycles(ig.graph(found)) == []


def test_no_private_name_from_another_package(found: list) -> None:
    bad = ig.private_cross_imports(found)
    assert not bad, [f"{i.importer}:{i.line} imports {i.target} {i.names}" for i in bad]


def test_no_private_attribute_of_another_projects_object() -> None:
    """``obj._x`` where ``obj`` is a name imported from another room (a class or module)."""
    bad = []
    for module, path in ig.library_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        foreign: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                root = node.module.split(".")[0]
                if root in ALLOWED and root != ig.top(module):
                    foreign.update(a.asname or a.name for a in node.names)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in foreign):
                bad.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    assert not bad, bad


def test_dependencies_point_one_way(found: list) -> None:
    wrong = [f"{i.importer}:{i.line} -> {i.target}" for i in found
             if ig.top(i.target) != ig.top(i.importer)
             and ig.top(i.target) not in ALLOWED[ig.top(i.importer)]]
    assert not wrong, wrong


def test_every_library_package_is_known() -> None:
    packages = {p.parent.name for p in ig.ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= set(ALLOWED), packages - set(ALLOWED)


_PROBE = """
import importlib, json, logging, os, sys
for lib in ("torch", "transformers", "peft", "trl", "sentence_transformers", "faiss"):
    importlib.import_module(lib)  # third-party effects (trl sets TORCHINDUCTOR_*) are not ours
before_env = dict(os.environ)
handlers = list(logging.getLogger().handlers)
names = json.loads(sys.argv[1])
for name in names:
    importlib.import_module(name)
changed = sorted(k for k in set(before_env) | set(os.environ)
                 if before_env.get(k) != os.environ.get(k))
print(json.dumps({"env": changed, "handlers": len(logging.getLogger().handlers) - len(handlers)}))
"""


def test_importing_the_library_changes_nothing() -> None:
    """Importing every library module leaves the environment and the logging set-up alone (the
    CLI entry points set the offline environment and logging, not an import)."""
    names = [m for m in ig.library_modules() if not m.endswith("__main__")]
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(names)], capture_output=True,
                         text=True, cwd=ig.ROOT, timeout=600, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"env": [], "handlers": 0}, out.stderr[-2000:]
