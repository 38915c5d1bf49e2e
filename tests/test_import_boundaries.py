"""Model code never imports training frameworks; losses and collectives never import models."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "clap_train"
RULES = {
    "models": ("lightning", "hydra", "webdataset", "pytorch_lightning"),
    "losses": ("clap_train.models",),
    "distributed": ("clap_train.models",),
}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("package", sorted(RULES))
def test_import_boundaries(package):
    offenders = [
        f"{path.relative_to(PKG.parent)} imports {name}"
        for path in (PKG / package).rglob("*.py")
        for name in _imports(path)
        if name.startswith(RULES[package])
    ]
    assert not offenders, offenders
