"""Every import rule of docs/ARCHITECTURE.md, read from the source with `ast` (nothing is imported).

Rules are written per package as forbidden prefixes; the last tests check that the package graph has
no cycle and that `clap_train` imports inside functions only where a `# why` comment says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "clap_train"
FRAMEWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "webdataset")
# package -> imports it must not make (prefix match on the dotted module name)
FORBIDDEN = {
    "models": (*FRAMEWORKS, "clap_train.data", "clap_train.training", "clap_train.checkpoints",
               "clap_train.inference", "clap_train.evaluation", "clap_train.losses", "clap_train.distributed"),
    "data": ("clap_train.models", "clap_train.training", "clap_train.checkpoints", "clap_train.inference",
             "clap_train.evaluation", "clap_train.losses", "clap_train.distributed", "hydra"),
    "losses": ("clap_train.models", "clap_train.training", "clap_train.data", "clap_train.checkpoints",
               "lightning", "hydra"),
    "distributed": ("clap_train.models", "clap_train.training", "clap_train.data", "clap_train.checkpoints",
                    "lightning", "hydra"),
    "evaluation": ("clap_train.training", "clap_train.checkpoints", "hydra"),
    "checkpoints": ("clap_train.training", "clap_train.data", "clap_train.evaluation", "clap_train.inference",
                    *FRAMEWORKS),
    "inference": ("clap_train.training", "clap_train.checkpoints", "clap_train.evaluation", *FRAMEWORKS),
    "training": ("clap_train.checkpoints", "hydra"),
}
SIGNAL_ALLOWED = ("torch", "torchaudio", "numpy", "math", "__future__", "clap_train.signal", "copy")
ENTRY_POINTS = ("__main__.py", "train.py", "evaluate_checkpoint.py")  # the only callers of instantiate


def _imports(path: Path, function_level_only: bool = False):
    """(line, dotted name) of each import in `path`; with `function_level_only`, those inside a def."""
    tree = ast.parse(path.read_text())
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(fn) if node is not fn}
    for node in ast.walk(tree):
        if function_level_only and id(node) not in nested:
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _files(package: str | None = None):
    root = PKG / package if package else PKG
    return sorted(root.rglob("*.py"))


def _offenders(files, bad) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in files for line, name in _imports(path)
            if bad(name)]


def _matches(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_down(package):
    assert not _offenders(_files(package), lambda name: _matches(name, FORBIDDEN[package]))


def test_signal_is_a_leaf():
    assert not _offenders(_files("signal"), lambda name: not _matches(name, SIGNAL_ALLOWED))


def test_library_never_imports_the_offline_tools():
    assert not _offenders(_files(), lambda name: _matches(name, ("data_pipelines",)))


def test_only_entry_points_call_instantiate():
    calls = [f"{path.relative_to(ROOT)}" for path in _files() if path.name not in ENTRY_POINTS or path.parent != PKG
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "instantiate"]
    assert not calls, calls
    importers = _offenders([p for p in _files() if p.parent != PKG or p.name not in ENTRY_POINTS],
                           lambda name: _matches(name, ("hydra.utils",)))
    assert not importers, importers


def _fail_on_cycle(graph: dict[str, set[str]]) -> None:
    """Depth-first walk of `graph`; fails naming the first import cycle it meets."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join(trail[trail.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_function_level_clap_train_imports_say_why():
    offenders = []
    for path in _files():
        lines = path.read_text().splitlines()
        for line, name in _imports(path, function_level_only=True):
            if _matches(name, ("clap_train",)) and "# why" not in lines[line - 2] and "# why" not in lines[line - 1]:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name} inside a function")
    assert not offenders, offenders


def _package_of(path: Path) -> str:
    parts = path.relative_to(PKG).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def test_package_graph_has_no_cycle():
    """Edges between the subpackages and top-level modules of clap_train (entry modules included)."""
    graph: dict[str, set[str]] = {}
    for path in _files():
        source = _package_of(path)
        for _, name in _imports(path):
            parts = name.split(".")
            if parts[0] == "clap_train" and len(parts) > 1 and parts[1] != source:
                graph.setdefault(source, set()).add(parts[1])
    _fail_on_cycle(graph)
    assert "models" in graph and "signal" not in graph  # the walk saw the tree; the leaf imports no package


def test_module_graph_has_no_cycle():
    """Module-level edges between clap_train modules (what Python executes at import time)."""
    def module_name(path: Path) -> str:
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        return ".".join(parts)

    modules = {module_name(p): p for p in _files()}
    graph = {}
    for name, path in modules.items():
        top_level = set(_imports(path)) - set(_imports(path, function_level_only=True))
        graph[name] = {target for _, target in top_level if target in modules and target != name}
    _fail_on_cycle(graph)
