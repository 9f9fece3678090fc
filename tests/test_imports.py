"""Imports point one way (docs/design.md, "Layers"): every module is parsed with ``ast``,
imports inside functions included, and the test fails on an import of a higher layer, on an
import cycle between modules, on a module no layer claims, and on an import inside a function
that is not declared below with its reason."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "tamebias"
ROOT = "tamebias"

# bottom to top: a module may import its own layer and the layers below it. A module belongs
# to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation: errors, registries, run folders, typed config, the task catalogue",
     ("tamebias.errors", "tamebias.registry", "tamebias.rundir", "tamebias.config",
      "tamebias.tasks", "tamebias.records", "tamebias.legacy")),
    ("data and models", ("tamebias.data", "tamebias.models")),
    ("evaluation", ("tamebias.evaluation",)),
    ("methods", ("tamebias.methods",)),
    ("training and the recipe catalogue (recipes name methods)",
     ("tamebias.training", "tamebias.lineage", "tamebias.recipes")),
    ("plotting", ("tamebias.report.figures", "tamebias.report.shift_figures", "tamebias.report")),
    ("composition: config typed by the method, runs built, trained and restored",
     ("tamebias.compose", "tamebias.api", "tamebias.inference", "tamebias.prediction",
      "tamebias.export", "tamebias.translation", "tamebias.diagnosis", "tamebias.report.tsne",
      "tamebias.fewshot_translation")),
    ("runners: recipes, benchmarks, sweeps, the demo, the HTML report",
     ("tamebias.recipe_fit", "tamebias.bench", "tamebias.segbench", "tamebias.sweep",
      "tamebias.search", "tamebias.demo", "tamebias.report.html")),
    ("command line", ("tamebias.cli", "tamebias.__main__")),
]

# modules that may import tamebias modules inside functions, and why; every other module
# imports at the top. (The package root, the lazy public API, imports its modules on first use
# through importlib and is outside the layers: every module may read its ``__version__``.)
IN_FUNCTION: dict[str, str] = {
    "tamebias.cli": "each command imports its layers when it runs: `tamebias --help` stays "
                    "torch-free",
    "tamebias.demo": "imported by the CLI at start-up for its defaults; the runner imports "
                     "its layers when it runs",
}

# (importer, imported): allowed imports of a higher layer, each with its reason
UPWARD: dict[tuple[str, str], str] = {}


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def imports_of(name: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for each tamebias import of ``name``;
    ``from package import module`` counts as an import of the module."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    inside = {id(node) for function in ast.walk(tree)
              if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
              for node in ast.walk(function)}
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in MODULES
                       else origin for alias in node.names]
        for target in targets:
            if target == ROOT or target.startswith(ROOT + "."):
                while target not in MODULES:  # tamebias.a.b where b is a name in module a
                    target = target.rpartition(".")[0]
                found.append((target, node.lineno, id(node) in inside))
    return found


def layer_of(name: str) -> int | None:
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS)
               for prefix in prefixes if name == prefix or name.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


GRAPH = {name: imports_of(name) for name in MODULES}


def test_every_module_has_a_layer():
    lost = [name for name in MODULES if name != ROOT and layer_of(name) is None]
    assert not lost, f"add {lost} to a layer in tests/test_imports.py (and docs/design.md)"


def test_no_module_imports_a_higher_layer():
    upward, used = [], set()
    for name, imports in GRAPH.items():
        if name == ROOT:
            continue
        for target, line, _ in imports:
            if target == ROOT:  # the package root: __version__, defined before any import
                continue
            if layer_of(target) is not None and layer_of(name) is not None and \
                    layer_of(target) > layer_of(name):
                if (name, target) in UPWARD:
                    used.add((name, target))
                    continue
                upward.append(f"{name}:{line} imports {target} "
                              f"({LAYERS[layer_of(name)][0]} -> {LAYERS[layer_of(target)][0]})")
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)
    stale = set(UPWARD) - used
    assert not stale, f"these no longer happen; remove them from UPWARD: {sorted(stale)}"


def test_no_import_cycles_between_modules():
    edges = {name: sorted({target for target, _, _ in imports
                           if target not in (ROOT, name) and (name, target) not in UPWARD})
             for name, imports in GRAPH.items() if name != ROOT}
    # importing a.b.c runs a/__init__ and a/b/__init__ first: the parents are edges too
    for name in list(edges):
        for target in list(edges[name]):
            parts = target.split(".")
            for cut in range(2, len(parts)):
                parent = ".".join(parts[:cut])
                if parent in edges and parent != name and not name.startswith(parent + "."):
                    edges[name].append(parent)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles between modules: {cycles}"


def test_imports_inside_functions_are_declared():
    hidden = sorted({f"{name}:{line} imports {target} inside a function"
                     for name, imports in GRAPH.items() if name not in IN_FUNCTION
                     for target, line, inside in imports if inside})
    assert not hidden, ("move these imports to the top of the module, or declare the module "
                        "in IN_FUNCTION with the reason:\n" + "\n".join(hidden))
    stale = [name for name in IN_FUNCTION
             if not any(inside for _, _, inside in GRAPH.get(name, []))]
    assert not stale, f"these modules import nothing inside functions any more: {stale}"


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The parser resolves relative and in-function imports: a planted violation is found."""
    fake = tmp_path / "tamebias"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "a.py").write_text("def f():\n    from ..api import x\n")
    (fake / "api.py").write_text("from .data.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", module_names())
    found = imports_of("tamebias.data.a")
    assert found == [("tamebias.api", 2, True)]
    assert layer_of("tamebias.api") > layer_of("tamebias.data.a")
    monkeypatch.setattr(sys.modules[__name__], "GRAPH",
                        {name: imports_of(name) for name in MODULES})
    with pytest.raises(AssertionError, match="tamebias.data.a:2 imports tamebias.api"):
        test_no_module_imports_a_higher_layer()
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles_between_modules()
    with pytest.raises(AssertionError, match="inside a function"):
        test_imports_inside_functions_are_declared()


def test_help_and_the_package_load_no_torch():
    code = ("import sys, tamebias, tamebias.cli, tamebias.config, tamebias.tasks; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
