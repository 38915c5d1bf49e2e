"""The whole FSDP2 stack through the real entry point on 2 CPU ranks: SigLIP (a loss with a sharded
parameter), the EMA callback, GradCache with K=2, a sharded checkpoint, and a relaunch that resumes it."""

import json

import pytest
import torch

from tests.ops._entry import run_entry

pytestmark = pytest.mark.slow
FSDP = ["+experiment=demo_siglip", "trainer=fsdp", "trainer.devices=2", "trainer.accelerator=cpu",
        "module.contrastive_accumulation=2", "callbacks.last.every_n_steps=2", "run_name=fsdp",
        "eval_before_training=false"]


def test_fsdp_siglip_ema_accumulation_checkpoint_and_resume(tmp_path):
    first = run_entry(tmp_path, *FSDP, "trainer.max_steps=2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    checkpoint = tmp_path / "runs" / "fsdp" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir() and len(list(checkpoint.glob("*.distcp"))) == 2  # one shard per rank
    meta = torch.load(checkpoint / "meta.pt", weights_only=True)
    assert meta["global_step"] == 2
    shadow = meta["callbacks"]["EMA"]["shadow"]  # gathered: full tensors, one per model parameter
    assert shadow["logit_scale_a"].shape == (1,) and shadow["text_projection.linear2.weight"].dim() == 2

    resumed = run_entry(tmp_path, *FSDP, "trainer.max_steps=4")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming from {checkpoint} (global step 2)" in resumed.stdout + resumed.stderr
    assert json.loads((tmp_path / "runs" / "fsdp" / "summary.json").read_text())["global_step"] == 4
