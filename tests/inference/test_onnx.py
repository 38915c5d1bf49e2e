"""`python -m clap_train.export SOURCE OUT --format onnx`: onnxruntime gives torch's embeddings, fused and unfused,
at batch sizes other than the traced one."""

import json

import numpy as np
import pytest
import torch

from clap_train import load_model
from tests.inference.conftest import run_cli

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", ["hf", "hf_fused"])
def test_onnx_encoders_match_torch(demo_sources, tmp_path, name):
    run = run_cli("clap_train.export", demo_sources[name], tmp_path / "onnx", "--format", "onnx")
    assert run.returncode == 0, run.stderr[-3000:]
    model = load_model(demo_sources[name])
    fused = model.audio_encoder.enable_fusion
    info = json.loads((tmp_path / "onnx" / "onnx_export.json").read_text())
    assert info["enable_fusion"] == fused and info["frontend"] == model.frontend.config()
    audio = ort.InferenceSession(str(tmp_path / "onnx" / "audio_encoder.onnx"))
    text = ort.InferenceSession(str(tmp_path / "onnx" / "text_encoder.onnx"))
    assert [i.name for i in audio.get_inputs()] == (["features", "is_longer"] if fused else ["features"])
    generator = torch.Generator().manual_seed(5)
    frames = model.frontend.num_frames(model.clip_samples)
    for batch, longer in ((1, [True]), (3, [True, False, True]), (4, [False] * 4)):
        features = torch.randn(batch, 4 if fused else 1, frames, 64, generator=generator) * 10 - 30
        is_longer = torch.tensor(longer)
        with torch.no_grad():
            expected = model.encode_audio(features, is_longer).numpy()
        feeds = {"features": features.numpy(), **({"is_longer": is_longer.numpy()} if fused else {})}
        np.testing.assert_allclose(audio.run(None, feeds)[0], expected, atol=1e-4)
    for batch, length in ((1, 7), (5, 20)):
        input_ids = torch.randint(5, 300, (batch, length), generator=generator)
        input_ids[:, 0] = 0
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[1:, length // 2:] = 0
        input_ids[1:, length // 2:] = 1
        with torch.no_grad():
            expected = model.encode_text(input_ids, mask).numpy()
        got = text.run(None, {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4)
