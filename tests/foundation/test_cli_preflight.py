"""`clap_train.evaluate` and `clap_train.export` report a mistaken input before torch is imported: each launch
runs with a `torch` on the path that fails on import, and must still end with its one-line user error."""

import subprocess
import sys

import pytest

from tests.foundation._entry import REPO

CASES = [
    ("clap_train.evaluate", ["checkpoint=/nowhere/last.ckpt"], "checkpoint: /nowhere/last.ckpt does not exist"),
    ("clap_train.evaluate", ["chekpoint=/nowhere/last.ckpt"], "Could not override 'chekpoint'"),
    ("clap_train.evaluate", [], "checkpoint: give checkpoint=PATH, or model=PRESET"),
    ("clap_train.evaluate", ["model=debug", "data.val_shards.clotho=/nowhere/val-*.tar"],
     "data.val_shards.clotho: no shards match '/nowhere/val-*.tar'"),
    ("clap_train.evaluate", ["model=debug", "data.tokenizer=/nowhere/tokenizer.json"],
     "data.tokenizer: /nowhere/tokenizer.json does not exist"),
    ("clap_train.export", ["/nowhere/last.ckpt", "/nowhere/out"], "CHECKPOINT /nowhere/last.ckpt does not exist"),
    ("clap_train.export", [str(REPO / "README.md"), str(REPO / "pyproject.toml")], "OUT_DIR"),
    ("clap_train.export", [str(REPO / "README.md"), "/nowhere/out", "--format", "tflite"], "--format"),
]


@pytest.mark.parametrize("module, arguments, message", CASES)
def test_user_error_reported_without_torch(tmp_path, module, arguments, message):
    poisoned = tmp_path / "poisoned" / "torch"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text("raise ImportError('torch was imported before the input checks')\n")
    env = {"PYTHONPATH": f"{poisoned.parent}:{REPO}", "PATH": "/usr/bin:/bin", "CLAP_RUNS_DIR": str(tmp_path / "runs")}
    result = subprocess.run([sys.executable, "-m", module, *arguments], cwd=tmp_path, capture_output=True, text=True,
                            check=False, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{module}: error: ") and message in lines[0], result.stderr
