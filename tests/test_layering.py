"""Import layering of ``src/medbalance``: no module imports from a higher layer, no import cycles.

Every ``import`` / ``from ... import`` naming a ``medbalance`` module is read with :mod:`ast`,
at module level and inside functions alike. A module's layer is that of the longest prefix
in :data:`LAYER_OF`; a module may import from its own layer and the layers below. Cycles are
looked for among module-level imports only (a function-level import runs after every module
is loaded). Today's exceptions are in :data:`ALLOWED`, each with its reason: the list may
only shrink, and a new upward import fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Bottom to top.
LAYERS = ("support", "core", "schema", "data", "report", "engine", "methods", "experiments", "cli")

LAYER_OF = {
    # the package itself only holds __version__; errors, atomic writes, path and memory helpers,
    # the "did you mean" matcher: imported by every layer, importing nothing above them
    "medbalance": "support",
    "medbalance.errors": "support",
    "medbalance._atomic": "support",
    "medbalance._paths": "support",
    "medbalance._memory": "support",
    "medbalance._malloc": "support",
    "medbalance._suggest": "support",
    # the built-in YAML configs' names and paths
    "medbalance.configs": "support",
    "medbalance.losses": "core",
    "medbalance.nets": "core",
    "medbalance.metrics": "core",
    # the fields every data reader's schema is built from (pydantic only): below the readers that define
    # their schemas from them, so a schema never needs the arrays code
    "medbalance.data.schema": "schema",
    "medbalance.data": "data",
    # the run config builds its data union from the readers (data.kinds), and data.build / data.folds take
    # a RunConfig: it sits in the data layer; it validates loss and network names against the core registries
    "medbalance.config": "data",
    # reports and figures: the engine writes a run's report when training ends
    "medbalance.report": "report",
    "medbalance.engine": "engine",
    "medbalance.methods": "methods",
    # the seeds' tables as commands: one module per paper over the runner, training recipes of methods/
    "medbalance.experiments": "experiments",
    # ONNX export builds on a loaded run (engine) and is called by the CLI only
    "medbalance.export": "methods",
    # the Python API: train / load_run / predict / evaluate over the engine
    "medbalance.api": "methods",
    "medbalance.cli": "cli",
    "medbalance.__main__": "cli",
}

#: Today's upward imports, ``(importer, imported)``, each with its reason. Shrink it, never grow it.
ALLOWED = {
    # the report reads the markers the engine's TrainLog writes into train.log (function-level)
    ("medbalance.report.html", "medbalance.engine.trainlog"): "NAN_GUARD / RESUMED of train.log",
    # `medbalance.train` and friends: the package re-exports the Python API on first use (function-level)
    ("medbalance", "medbalance.api"): "medbalance/__init__ re-exports train, load_run, predict, evaluate",
    # a recipe names its method; validating it (options included) needs the method's class, looked up in
    # methods.METHODS inside config.method_of (function-level): the one upward edge the recipe design adds
    ("medbalance.config", "medbalance.methods"): "method_of resolves a recipe's method name and options",
}


def module_name(path: Path, src: Path) -> str:
    """``medbalance.a.b`` of ``src/medbalance/a/b.py`` (a package by its ``__init__.py``)."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_modules(src: Path) -> dict[str, ast.Module]:
    """Every module under ``src/medbalance``, parsed."""
    return {module_name(p, src): ast.parse(p.read_text(), str(p)) for p in sorted((src / "medbalance").rglob("*.py"))}


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")[: len(importer.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(tree: ast.Module, importer: str, known: set[str], *, is_package: bool = False, top_level: bool = False):
    """``(imported module, line)`` of every ``medbalance`` import in ``tree`` (only the module-level
    statements with ``top_level``). ``from pkg import sub`` imports the module ``pkg.sub``;
    ``from pkg import name`` the package ``pkg``."""
    nodes = tree.body if top_level else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, importer, is_package)
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
            targets = subs + ([module] if len(subs) < len(node.names) else [])
        else:
            continue
        for target in targets:
            if target == "medbalance" or target.startswith("medbalance."):
                yield target, node.lineno


def layer(module: str) -> int:
    """Index in :data:`LAYERS` of the longest :data:`LAYER_OF` prefix of ``module``."""
    parts = module.split(".")
    # the package "medbalance" is its own entry, not a catch-all: a new top-level module needs a layer
    for k in range(len(parts), 1 if len(parts) > 1 else 0, -1):
        prefix = ".".join(parts[:k])
        if prefix in LAYER_OF:
            return LAYERS.index(LAYER_OF[prefix])
    raise AssertionError(f"{module} has no layer: add its package to LAYER_OF")


def upward_imports(trees: dict[str, ast.Module], packages: set[str]) -> set[tuple[str, str]]:
    """``(importer, imported)`` pairs where ``imported`` sits in a higher layer."""
    known = set(trees)
    found = set()
    for name, tree in trees.items():
        for target, _ in imports(tree, name, known, is_package=name in packages):
            if layer(target) > layer(name):
                found.add((name, target))
    return found


def module_cycles(trees: dict[str, ast.Module], packages: set[str]) -> list[list[str]]:
    """Import cycles among module-level imports (strongly connected components of two or more).

    Importing ``a.b.c`` also runs the packages ``a.b`` and ``a`` that the importer is not inside
    of, so those count as imported too."""
    known = set(trees)
    graph: dict[str, set[str]] = {name: set() for name in trees}
    for name, tree in trees.items():
        inside = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 2)}
        for target, _ in imports(tree, name, known, is_package=name in packages, top_level=True):
            parents = {".".join(target.split(".")[:k]) for k in range(1, target.count(".") + 1)}
            graph[name] |= {m for m in {target} | (parents - inside) if m in known and m != name}
    # Tarjan's strongly connected components, iterative
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def _packages(src: Path) -> set[str]:
    return {module_name(p, src) for p in (src / "medbalance").rglob("__init__.py")}


def test_no_module_imports_from_a_higher_layer():
    trees = read_modules(SRC)
    found = upward_imports(trees, _packages(SRC))
    new = sorted(found - set(ALLOWED))
    assert not new, "imports from a higher layer (see LAYERS in this test): " + ", ".join(f"{a} -> {b}" for a, b in new)
    stale = sorted(set(ALLOWED) - found)
    assert not stale, "ALLOWED lists imports that are gone; remove them: " + ", ".join(f"{a} -> {b}" for a, b in stale)


def test_no_import_cycles_at_module_level():
    trees = read_modules(SRC)
    assert module_cycles(trees, _packages(SRC)) == []


def test_every_module_has_a_layer():
    for name in read_modules(SRC):
        layer(name)


def _fake_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "medbalance" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checker_finds_an_upward_import_also_inside_a_function(tmp_path):
    src = _fake_tree(
        tmp_path,
        {
            "__init__.py": "",
            "losses/__init__.py": "",
            "losses/dice.py": "def f():\n    from medbalance.engine.run import train\n",
            "engine/__init__.py": "",
            "engine/run.py": "from medbalance.losses import dice\n\ntrain = None\n",
        },
    )
    trees = read_modules(src)
    assert upward_imports(trees, _packages(src)) == {("medbalance.losses.dice", "medbalance.engine.run")}
    assert module_cycles(trees, _packages(src)) == []  # the upward import is inside a function


def test_checker_resolves_relative_imports_and_finds_a_cycle(tmp_path):
    src = _fake_tree(
        tmp_path,
        {
            "__init__.py": "",
            "data/__init__.py": "",
            "data/a.py": "from . import b\n",
            "data/b.py": "from .a import x\n",
        },
    )
    trees = read_modules(src)
    assert upward_imports(trees, _packages(src)) == set()
    assert module_cycles(trees, _packages(src)) == [["medbalance.data.a", "medbalance.data.b"]]


def test_checker_counts_the_package_init_a_cross_package_import_runs(tmp_path):
    # engine/__init__ imports engine.run, which imports report; report.html importing
    # engine.trainlog at module level runs engine/__init__ first: a cycle through the package
    src = _fake_tree(
        tmp_path,
        {
            "__init__.py": "",
            "engine/__init__.py": "from medbalance.engine.run import train\n",
            "engine/run.py": "from medbalance.report import html\n\ntrain = None\n",
            "engine/trainlog.py": "",
            "report/__init__.py": "",
            "report/html.py": "from medbalance.engine.trainlog import *\n",
        },
    )
    trees = read_modules(src)
    assert module_cycles(trees, _packages(src)) == [
        ["medbalance.engine", "medbalance.engine.run", "medbalance.report.html"]
    ]


@pytest.mark.parametrize("module", ["medbalance.unknown_module", "other.package"])
def test_a_module_outside_the_table_has_no_layer(module):
    with pytest.raises(AssertionError, match="has no layer"):
        layer(module)
