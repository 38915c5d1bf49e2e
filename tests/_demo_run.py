"""Run the real `python -m clap_train` on a shrunk embedded demo and read its before/after summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.ops._entry import clean_env

REPO = Path(__file__).resolve().parents[1]
SHORT_DEMO = [
    "data.prepare.num_train=512", "data.prepare.num_val=64", "data.prepare.samples_per_shard=128",
    "data.batch_size=32", "data.num_workers=0", "trainer.max_steps=48", "trainer.log_every_n_steps=8",
    "eval_before_training=true",
]


def run_demo(root: Path, run_name: str, *overrides: str, timeout: int = 900) -> dict:
    """Train `run_name` under `root` with `overrides`; return summary.json ({"before": ..., "after": ...})."""
    proc = subprocess.run([sys.executable, "-m", "clap_train", *SHORT_DEMO, f"run_name={run_name}", *overrides],
                          cwd=REPO, env=clean_env(root), capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((root / "runs" / run_name / "summary.json").read_text())


def recall_sum(metrics: dict, val_set: str = "synthetic") -> float:
    """t2a + a2t R@1/5/10 of one validation set."""
    return sum(metrics[f"val/{val_set}/{d}_R@{k}"] for d in ("t2a", "a2t") for k in (1, 5, 10))
