"""Run the real `python -m clap_train` entry point in subprocesses, isolated in tmp dirs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The embedded demo shrunk to seconds; the YAML under test is the real one.
TINY_DEMO = [
    "data.prepare.num_train=256", "data.prepare.num_val=32", "data.prepare.samples_per_shard=64",
    "data.batch_size=16", "data.num_workers=0", "eval_before_training=false", "trainer.log_every_n_steps=1",
]


def clean_env(root: Path, **extra: str) -> dict:
    """This process's environment without Slurm or W&B variables, with runs under `root`.

    The demo shards go to $CLAP_TEST_CACHE (set once per session by tests/ops/conftest.py) so that
    they are generated once, else to `root/cache`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_"))}
    env.update(CLAP_CACHE_DIR=os.environ.get("CLAP_TEST_CACHE", str(root / "cache")), CLAP_RUNS_DIR=str(root / "runs"),
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **extra)
    return env


def start_entry(root: Path, *overrides: str, log: Path, new_session: bool = False, **env: str) -> subprocess.Popen:
    """`python -m clap_train` in the background; `new_session`: in a process group of its own (with its data
    workers), so a test can signal the group as a terminal's Ctrl-C or `scancel` do."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "clap_train", *TINY_DEMO, *overrides], cwd=REPO,
                                env=clean_env(root, **env), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=new_session)


def run_entry(root: Path, *overrides: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clap_train", *TINY_DEMO, *overrides], cwd=REPO,
                          env=clean_env(root, **env), capture_output=True, text=True, timeout=timeout, check=False)


def wait_for(condition, timeout_s: float, what: str, proc: subprocess.Popen | None = None, poll_s: float = 0.05):
    """Poll `condition()` until true; fail naming `what` on timeout or when `proc` exits first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited (rc {proc.returncode}) before: {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}")
        time.sleep(poll_s)


def read_metrics(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))
