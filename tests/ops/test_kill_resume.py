"""SIGKILL a real training process and relaunch it: it resumes from the run directory's checkpoint.

Real processes through the real entry point (`python -m clap_train`) on the tiny demo.
"""

from __future__ import annotations

import json
import signal

import pytest
import torch

from clap_train.training.checkpointing import SLOW_REPLACE_ENV
from clap_train.training.optim import warmup_cosine
from clap_train.training.resume import checkpoint_step
from tests.ops._entry import read_metrics, run_entry, start_entry, wait_for

pytestmark = pytest.mark.slow
LR, WARMUP, MAX_STEPS = 2e-3, 5, 12


def probe(path, sleep_s: float) -> list[str]:
    return ["+callbacks.probe._target_=tests.ops.probe.RecordBatches", f"+callbacks.probe.path={path}",
            f"+callbacks.probe.sleep_s={sleep_s}"]


def test_sigkill_mid_run_then_relaunch_resumes(tmp_path):
    run = [f"module.optimizer.lr={LR}", f"module.scheduler.warmup_steps={WARMUP}", f"trainer.max_steps={MAX_STEPS}",
           "callbacks.last.every_n_steps=3", "run_name=killed"]
    run_dir = tmp_path / "runs" / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    # a slow step (0.4 s) keeps the first launch busy after its first checkpoint
    proc = start_entry(tmp_path, *run, *probe(tmp_path / "first.jsonl", 0.4), log=tmp_path / "first.log")
    try:
        wait_for(last.is_file, 300, "the first last.ckpt", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = checkpoint_step(last)
    assert 3 <= step < MAX_STEPS and step % 3 == 0

    result = run_entry(tmp_path, *run, *probe(tmp_path / "second.jsonl", 0.0))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"resuming from {last} (global step {step})" in log
    assert "Restored all states" in log
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == MAX_STEPS

    # the learning rate continues the schedule at the restored step (CSV of the second launch)
    factor = warmup_cosine(WARMUP, MAX_STEPS, 0.05)
    rows = [r for r in read_metrics(run_dir / "logs" / "version_1" / "metrics.csv") if r["lr-AdamW/towers"]]
    assert int(rows[0]["step"]) == step
    for row in rows:
        assert float(row["lr-AdamW/towers"]) == pytest.approx(LR * factor(int(row["step"])), rel=1e-6)
    final = torch.load(last, weights_only=True)
    assert final["global_step"] == MAX_STEPS and final["lr_schedulers"][0]["last_epoch"] == MAX_STEPS
    assert final["optimizer_states"][0]["state"], "optimizer moments are checkpointed"

    # the data stream continues: the resumed launch starts at the checkpoint's step with new batches
    first = [json.loads(line) for line in (tmp_path / "first.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (tmp_path / "second.jsonl").read_text().splitlines()]
    assert first[0]["step"] == 0 and second[0]["step"] == step
    assert [r["step"] for r in second] == list(range(step, MAX_STEPS))
    assert second[0]["keys"] != first[0]["keys"]


def test_sigkill_during_checkpoint_write_keeps_previous(tmp_path):
    run = ["trainer.max_steps=6", "callbacks.last.every_n_steps=2", "run_name=torn"]
    ckpt_dir = tmp_path / "runs" / "torn" / "checkpoints"
    last, tmp = ckpt_dir / "last.ckpt", ckpt_dir / "last.ckpt.tmp"
    # test-only hook: the save at step 4 sleeps between writing last.ckpt.tmp and replacing last.ckpt
    proc = start_entry(tmp_path, *run, log=tmp_path / "first.log", **{SLOW_REPLACE_ENV: "120"})
    try:
        wait_for(lambda: last.is_file() and tmp.is_file(), 300, "a second save in progress", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert tmp.is_file()
    previous = torch.load(last, weights_only=True)  # loadable, and the earlier state
    assert previous["global_step"] == 2 and previous["state_dict"]

    result = run_entry(tmp_path, *run)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"resuming from {last} (global step 2)" in result.stdout + result.stderr
    assert torch.load(last, weights_only=True)["global_step"] == 6
    assert not tmp.exists()
