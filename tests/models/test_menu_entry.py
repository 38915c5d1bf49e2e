"""The new tower presets through the real entry point on the shrunk demo: recall after training beats before."""

import pytest
import torch

from clap_train import load_model
from clap_train.inference import embed_audio
from tests._demo_run import recall_sum, run_demo


@pytest.mark.slow
@pytest.mark.parametrize(("run_name", "overrides"), [
    ("xlmr", ["model=debug_xlmr", "data.prepare.vocab_size=1000"]),
    ("whisper", ["model=whisper_debug"]),
    ("modernbert", ["model=debug_modernbert"]),
])
def test_preset_trains_through_the_entry_point(tmp_path, run_name, overrides):
    summary = run_demo(tmp_path, run_name, *overrides)
    assert recall_sum(summary["after"]) > recall_sum(summary["before"]) + 0.3, summary
    # the checkpoint rebuilds through the model allow-list and embeds
    model = load_model(tmp_path / "runs" / run_name / "checkpoints" / "last.ckpt")
    audio = embed_audio(model, [torch.randn(40000) * 0.1], sample_rate=model.frontend.sample_rate)
    assert audio.shape == (1, model.embed_dim) and torch.isfinite(audio).all()
