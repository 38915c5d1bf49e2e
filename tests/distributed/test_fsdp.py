"""FSDP2 (FSDP2Strategy + parallelize) against DDP on 2 CPU gloo ranks through Lightning, and DCP resume.

The tiny CLAP (tests/training/_tiny.py) trains with SigLIP (a loss that owns a parameter), gradient
clipping, SGD with momentum and a warmup-cosine schedule. Every parameter (full, gathered) after every
step must match between the strategies, and an FSDP run resumed from its sharded checkpoint must continue
exactly where an uninterrupted DDP run goes. The same script checks the EMA and FreezeTowers callbacks and
contrastive accumulation (GradCache) under FSDP2 against DDP.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "distributed" / "_train_script.py"
TOLERANCE = 1e-5


def run_script(*args: str) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, str(SCRIPT), *args], check=False, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(args[2], weights_only=True)


def assert_same_parameters(expected: dict, actual: dict, step: int) -> None:
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        assert torch.allclose(value, actual[name], atol=TOLERANCE, rtol=0), (step, name)


@pytest.mark.slow
def test_fsdp_matches_ddp_and_resumes_from_sharded_checkpoint(tmp_path):
    ddp = run_script("ddp", "4", str(tmp_path / "ddp.pt"))
    fsdp = run_script("fsdp", "2", str(tmp_path / "fsdp.pt"), "--ckpt-dir", str(tmp_path / "ckpt"))

    assert "loss.bias" in ddp["params"][1] and "model.logit_scale_a" in ddp["params"][1]
    for step in (1, 2):
        assert fsdp["losses"][step] == pytest.approx(ddp["losses"][step], abs=TOLERANCE)
        assert_same_parameters(ddp["params"][step], fsdp["params"][step], step)
    # the parameters did move: the comparison is not between two untouched models
    moved = ddp["params"][2]["model.audio_encoder.stem.weight"] - ddp["params"][1]["model.audio_encoder.stem.weight"]
    assert moved.abs().max() > 1e-4

    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    assert checkpoint.is_dir() and (checkpoint / "meta.pt").is_file()
    assert len(list(checkpoint.glob("*.distcp"))) == 2  # one shard file per rank

    resumed = run_script("fsdp", "4", str(tmp_path / "resumed.pt"), "--resume", str(checkpoint))
    assert resumed["global_step"] == 4
    assert sorted(resumed["params"]) == [3, 4]  # global_step continued from 2
    for step in (3, 4):
        assert resumed["losses"][step] == pytest.approx(ddp["losses"][step], abs=TOLERANCE)
        assert_same_parameters(ddp["params"][step], resumed["params"][step], step)


@pytest.mark.slow
def test_ema_under_fsdp_matches_ddp_and_resumes_from_sharded_checkpoint(tmp_path):
    """The EMA callback on sharded parameters: the same average as under DDP after every step, saved
    (gathered) into the sharded checkpoint and re-sharded on resume."""
    ddp = run_script("ddp", "4", str(tmp_path / "ddp.pt"), "--ema")
    fsdp = run_script("fsdp", "2", str(tmp_path / "fsdp.pt"), "--ckpt-dir", str(tmp_path / "ckpt"), "--ema")
    for step in (1, 2):
        assert_same_parameters(ddp["ema"][step], fsdp["ema"][step], step)
    # decay 0.5: after two steps the average lies strictly between the start and the current weights
    name = "model.audio_encoder.stem.weight"
    assert not torch.allclose(fsdp["ema"][2][name.removeprefix("model.")], fsdp["params"][2][name], atol=1e-6)
    stored = torch.load(tmp_path / "ckpt" / "last.ckpt" / "meta.pt", weights_only=True)["callbacks"]["EMA"]["shadow"]
    assert_same_parameters(fsdp["ema"][2], stored, 2)  # gathered, full tensors in the checkpoint

    resumed = run_script("fsdp", "4", str(tmp_path / "resumed.pt"), "--resume", str(tmp_path / "ckpt" / "last.ckpt"),
                         "--ema")
    for step in (3, 4):
        assert_same_parameters(ddp["ema"][step], resumed["ema"][step], step)


@pytest.mark.slow
def test_freeze_towers_under_fsdp_matches_ddp(tmp_path):
    """FreezeTowers(unfreeze_step=2) on sharded parameters: towers stay put while the heads train, then
    train too; every parameter equals DDP's after every step."""
    ddp = run_script("ddp", "4", str(tmp_path / "ddp.pt"), "--unfreeze-step", "2")
    fsdp = run_script("fsdp", "4", str(tmp_path / "fsdp.pt"), "--unfreeze-step", "2")
    for step in (1, 2, 3, 4):
        assert_same_parameters(ddp["params"][step], fsdp["params"][step], step)
    params = fsdp["params"]
    tower, head = "model.audio_encoder.stem.weight", "model.audio_projection.linear1.weight"
    assert torch.equal(params[1][tower], params[2][tower])  # frozen during step 2
    assert not torch.equal(params[1][head], params[2][head])  # the heads trained meanwhile
    assert not torch.equal(params[2][tower], params[3][tower])  # unfrozen at global step 2


@pytest.mark.slow
def test_contrastive_accumulation_under_fsdp_equals_one_big_batch(tmp_path):
    """GradCache with K=2 chunks on sharded parameters (the logit scales and the SigLIP bias live outside the
    towers) gives the parameters of DDP without accumulation, step after step."""
    ddp = run_script("ddp", "3", str(tmp_path / "ddp.pt"))
    fsdp = run_script("fsdp", "3", str(tmp_path / "fsdp.pt"), "--accumulation", "2")
    for step in (1, 2, 3):
        assert fsdp["losses"][step] == pytest.approx(ddp["losses"][step], abs=TOLERANCE)
        assert_same_parameters(ddp["params"][step], fsdp["params"][step], step)
    for name in ("model.logit_scale_a", "loss.bias"):  # the loss-side parameters trained
        assert not torch.equal(fsdp["params"][1][name], fsdp["params"][3][name]), name
