"""Run the real `python -m clap_train` entry point in a subprocess, isolated in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Shrinks the embedded demo to seconds; the YAML under test is the real one.
TINY_DEMO = [
    "data.prepare.num_train=512", "data.prepare.num_val=64", "data.prepare.samples_per_shard=128",
    "data.batch_size=32", "data.num_workers=0",
]


def clean_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_"))}
    env.update(CLAP_CACHE_DIR=str(tmp_path / "cache"), CLAP_RUNS_DIR=str(tmp_path / "runs"), PYTHONPATH=str(REPO),
               WANDB_MODE="offline")
    return env


def run_entry(tmp_path: Path, *overrides: str, module: str = "clap_train", timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", module, *overrides], check=False, cwd=REPO, env=clean_env(tmp_path),
        capture_output=True, text=True, timeout=timeout,
    )
