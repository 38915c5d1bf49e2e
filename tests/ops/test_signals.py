"""SIGTERM / SIGINT to a real `python -m clap_train` (and its data workers): last.ckpt is saved at the step
boundary, the process exits 128 + signal, and the relaunch continues bitwise like an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from tests.ops._entry import read_metrics, run_entry, start_entry, wait_for

pytestmark = pytest.mark.slow
MAX_STEPS = 20  # the tiny demo's epoch is 16 steps: the resumed run crosses an epoch end
# two workers, a reseed every 3 of a worker's batches: a resume rotates the workers and drops batches
RUN = [f"trainer.max_steps={MAX_STEPS}", "data.num_workers=2", "data.reseed_every_n_batches=3",
       "trainer.val_check_interval=6", "callbacks.last.every_n_steps=1000"]


def probe(path: Path, sleep_s: float = 0.0) -> list[str]:
    return ["+callbacks.probe._target_=tests.ops.probe.RecordBatches", f"+callbacks.probe.path={path}",
            f"+callbacks.probe.sleep_s={sleep_s}"]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def stop_with(tmp_path: Path, signum: signal.Signals, run_name: str, after_steps: int, *extra: str) -> int:
    """Launch, signal the whole process group once `after_steps` batches started, return the saved step."""
    batches, log = tmp_path / f"{run_name}-first.jsonl", tmp_path / f"{run_name}-first.log"
    proc = start_entry(tmp_path, *RUN, *extra, f"run_name={run_name}", *probe(batches, 0.3), log=log,
                       new_session=True)
    try:
        wait_for(lambda: len(records(batches)) >= after_steps, 300, f"{after_steps} training steps", proc)
        os.killpg(proc.pid, signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode == 128 + signum, text[-3000:]
    last = tmp_path / "runs" / run_name / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"]
    assert after_steps <= step < MAX_STEPS
    assert f"clap_train: {signum.name} at step {step}: saved {last}; relaunch the same command to resume" in text
    assert "Traceback" not in text, text[-3000:]
    return step


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def losses(run_dir: Path) -> dict[int, str]:
    rows = [r for version in sorted((run_dir / "logs").glob("version_*")) for r in read_metrics(version / "metrics.csv")]
    return {int(r["step"]): r["train/loss"] for r in rows if r.get("train/loss")}


def test_sigterm_saves_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight = run_entry(tmp_path, *RUN, "run_name=straight", *probe(tmp_path / "straight.jsonl"))
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]
    assert "starting fresh at step 0" in straight.stdout + straight.stderr

    step = stop_with(tmp_path, signal.SIGTERM, "stopped", 5)
    resumed = run_entry(tmp_path, *RUN, "run_name=stopped", *probe(tmp_path / "stopped-second.jsonl"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    last = tmp_path / "runs" / "stopped" / "checkpoints" / "last.ckpt"
    assert f"resuming from {last} (global step {step})" in resumed.stdout + resumed.stderr

    # the same batches at every step (the first launch may have fetched one more before it stopped)
    a = {r["step"]: r["keys"] for r in records(tmp_path / "straight.jsonl")}
    first = {r["step"]: r["keys"] for r in records(tmp_path / "stopped-first.jsonl") if r["step"] < step}
    second = {r["step"]: r["keys"] for r in records(tmp_path / "stopped-second.jsonl")}
    assert sorted(second) == list(range(step, MAX_STEPS))
    assert {**first, **second} == a
    # bitwise equal weights, optimizer moments and losses
    ref, got = final_state(tmp_path / "runs" / "straight"), final_state(tmp_path / "runs" / "stopped")
    assert ref["global_step"] == got["global_step"] == MAX_STEPS
    assert ref["state_dict"].keys() == got["state_dict"].keys()
    for name, value in ref["state_dict"].items():
        assert torch.equal(value, got["state_dict"][name]), name
    for ref_state, got_state in zip(ref["optimizer_states"][0]["state"].values(),
                                    got["optimizer_states"][0]["state"].values(), strict=True):
        assert all(torch.equal(ref_state[k], got_state[k]) for k in ref_state)
    assert losses(tmp_path / "runs" / "straight") == losses(tmp_path / "runs" / "stopped")
    # validation by steps: at 6, 12, 18 in both; the best checkpoints are step-named
    for run in ("straight", "stopped"):
        assert {p.name for p in (tmp_path / "runs" / run / "checkpoints").glob("best-*.ckpt")} <= {
            f"best-step{s:07d}.ckpt" for s in (6, 12, 18)}
        assert len(list((tmp_path / "runs" / run / "checkpoints").glob("best-*.ckpt"))) == 2


def test_ctrl_c_saves_and_the_relaunch_resumes(tmp_path):
    step = stop_with(tmp_path, signal.SIGINT, "interrupted", 3, "data.num_workers=1")
    result = run_entry(tmp_path, *RUN, "data.num_workers=1", "trainer.max_steps=8", "run_name=interrupted")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = tmp_path / "runs" / "interrupted" / "checkpoints" / "last.ckpt"
    assert f"resuming from {last} (global step {step})" in result.stdout + result.stderr
    assert final_state(tmp_path / "runs" / "interrupted")["global_step"] == max(8, step)


def test_a_run_shorter_than_an_epoch_validates_and_keeps_the_best(tmp_path):
    """4 steps of a 16-step epoch with validation every 2 steps: validated at 2 and 4, best-step*.ckpt kept."""
    result = run_entry(tmp_path, "trainer.max_steps=4", "trainer.val_check_interval=2", "run_name=short")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "short"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("best-*.ckpt")) == [
        "best-step0000002.ckpt", "best-step0000004.ckpt"]
    rows = read_metrics(run_dir / "logs" / "version_0" / "metrics.csv")
    # two validations inside fit (Lightning logs them at its batch counter, steps 1 and 3) and the final one
    assert len([r for r in rows if r.get("val/synthetic/t2a_R@1")]) == 3
