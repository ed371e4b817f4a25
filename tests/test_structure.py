"""The package's shape: layers that only look down, no import cycle (imports inside functions
count), imports at the top, and a README that lists every module.

The layers, bottom to top (README's module table has the same order):
  basics       files, config (the settings, torch-free), data.classes
  metrics      the confusion matrix and its scores
  runtime      device, processes, arithmetic, machine fingerprint, checkpoints, lock, run files
  model        backbone, model
  data         datasets, transforms, loaders, cache, downloads, the generated set
  evaluation   evaluate
  training     the training loop and its parts
  applications predict, export
  course       what the notebooks teach with
  command line cli, __main__
A module imports only from its own layer or the layers below; the core (everything under the
course) never imports the course."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import deeplab_kit

PACKAGE = Path(deeplab_kit.__file__).parent
ROOT = PACKAGE.parent
# The command line ties both tiers together (each command imports what it runs, inside its
# function, so that `--help` answers without loading torch: benchmarks/bench_cli.py).
ENTRY_POINTS = {"deeplab_kit.cli", "deeplab_kit.__main__"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(module imported, whether the import sits inside a function) for each kit import."""
    tree = ast.parse(path.read_text())
    functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(node) for function in functions for node in ast.walk(function)}
    known = modules()
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for target in targets:
            if target.startswith("deeplab_kit") and target in known and target != name:
                found.append((target, id(node) in inside))
    return found


def graph() -> dict[str, set[str]]:
    """module -> the kit modules it imports, plus its package: importing deeplab_kit.data.voc
    runs deeplab_kit/data/__init__.py first, so a package's imports count for its modules."""
    edges = {}
    for name, path in modules().items():
        edges[name] = {target for target, _ in imports(name, path)}
        parent = name.rpartition(".")[0]
        if parent != "deeplab_kit" and path.name != "__init__.py":
            edges[name].add(parent)
        edges[name].discard("deeplab_kit")
    return edges


def through_own_package(cycle: list[str]) -> bool:
    """A cycle that stays inside one package and passes through its __init__ (deeplab_kit.data
    re-exports VOCDataset, and its modules import each other by full name): Python resolves it
    in any order. A cycle that leaves the package is a real one."""
    packages = [name for name in cycle if modules()[name].name == "__init__.py"]
    return any(all(n == p or n.startswith(p + ".") for n in cycle) for p in packages)


LAYERS = (
    ("basics", ("deeplab_kit.files", "deeplab_kit.config", "deeplab_kit.data.classes")),
    ("metrics", ("deeplab_kit.metrics",)),
    ("runtime", ("deeplab_kit.runtime",)),
    ("model", ("deeplab_kit.backbone", "deeplab_kit.model")),
    ("data", ("deeplab_kit.data",)),
    ("evaluation", ("deeplab_kit.evaluate",)),
    ("training", ("deeplab_kit.training",)),
    ("applications", ("deeplab_kit.predict", "deeplab_kit.export")),
    ("course", ("deeplab_kit.course",)),
    ("command line", ("deeplab_kit.cli", "deeplab_kit.__main__")),
)


def layer(name: str) -> int:
    """The layer of a module: the one whose longest prefix matches it."""
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if name == prefix or name.startswith(prefix + ".")
    ]
    assert matches, f"{name} is in no layer: add it to LAYERS (and README's table)"
    return max(matches)[1]


def test_layers_only_look_down():
    """Every explicit import, inside functions too, goes to the importer's layer or below.
    (Importing a package's module also runs its __init__; the packages' __init__ files import
    nothing at their top level, so that implicit edge runs no code of a higher layer.)"""
    upward = []
    for name, path in modules().items():
        if name == "deeplab_kit":
            continue
        for target, _ in imports(name, path):
            if layer(target) > layer(name):
                upward.append(
                    f"{name} ({LAYERS[layer(name)][0]}) -> {target} ({LAYERS[layer(target)][0]})"
                )
    assert upward == []
    for path in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        assert all(n.module == "__future__" for n in top if isinstance(n, ast.ImportFrom)), path
        assert not any(isinstance(n, ast.Import) for n in top), path


def is_course(name: str) -> bool:
    return name.startswith("deeplab_kit.course")


def test_the_core_never_imports_the_course_layer():
    edges = graph()
    core = [name for name in edges if not is_course(name) and name not in ENTRY_POINTS]
    assert len(core) > 20 and any(is_course(name) for name in edges)
    crossing = sorted(f"{a} -> {b}" for a in core for b in edges[a] if is_course(b))
    assert crossing == []


def test_there_is_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                if not through_own_package(cycle):
                    cycles.append(" -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_imports_sit_at_the_top_of_modules():
    inner = []
    for name, path in modules().items():
        if name not in ENTRY_POINTS:
            inner += [f"{name}: {target}" for target, nested in imports(name, path) if nested]
    assert len(inner) <= 12, inner


def test_the_formatter_decides_the_layout():
    markers = sum(
        len(re.findall(r"# fmt: (skip|off)", path.read_text()))
        for folder in ("deeplab_kit", "tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
    )
    assert markers <= 10


def test_readme_lists_every_module_of_the_package():
    """README's module table holds each module once, under its package; and each package's
    docstring table lists the same modules."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| module | what it holds |") :]
    table = table[: table.index("\n\n")]
    listed = set(re.findall(r"`(deeplab_kit[\w./]*?)(?:\.py)?`", table))
    wanted = {name.replace(".", "/") for name in modules() if not name.endswith("__main__")}
    wanted.discard("deeplab_kit")
    shown = {entry.replace(".", "/") for entry in listed}
    assert shown == wanted
    for package in ("data", "runtime", "training", "course"):
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
        in_doc = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", doc, re.M))
        names = {n for pair in in_doc for n in pair if n}
        on_disk = {p.stem for p in (PACKAGE / package).glob("*.py") if p.stem != "__init__"}
        assert names == on_disk, package


def test_no_function_runs_over_50_lines():
    """Steps that read top to bottom: every function of the package, its docstring included,
    fits in 50 lines."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 50:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == []
