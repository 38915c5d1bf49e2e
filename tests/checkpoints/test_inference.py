"""clap_train.inference.embed_audio / embed_text: preprocessing of raw inputs."""

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from hydra.utils import instantiate

from clap_train.inference import embed_audio, embed_text
from clap_train.signal.fusion import build_fusion_features
from tests.checkpoints.test_export import debug_model_config

CLIP = 32000


def _model(fused: bool):
    model = instantiate({**debug_model_config(fused), "clip_samples": CLIP}).eval()
    return model


def _wave(num_samples: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(num_samples) * 0.1).astype(np.float32)


def test_unfused_head_crop_repeatpad_and_resampling():
    model = _model(False)
    long, short = _wave(CLIP + 5000), _wave(9000, seed=1)
    embeds = embed_audio(model, [long, short], 16000)
    assert embeds.shape == (2, 32) and torch.allclose(embeds.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        head = model.encode_audio(model.frontend(torch.from_numpy(long[:CLIP])[None]))
        tiled = torch.from_numpy(np.concatenate([np.tile(short, 3), np.zeros(CLIP - 27000, np.float32)]))
        padded = model.encode_audio(model.frontend(tiled[None]))
    assert torch.allclose(embeds[0], head[0], atol=1e-6) and torch.allclose(embeds[1], padded[0], atol=1e-6)
    at_32k = AF.resample(torch.from_numpy(short), 16000, 32000)
    expected = embed_audio(model, [AF.resample(at_32k, 32000, 16000)], 16000)
    assert torch.allclose(embed_audio(model, [at_32k], 32000), expected, atol=1e-6)


def test_fused_uses_fusion_features_with_true_flags_and_is_deterministic():
    model = _model(True)
    waves = [_wave(CLIP * 2), _wave(CLIP // 2, seed=2)]
    embeds = embed_audio(model, waves, 16000, seed=5)
    assert torch.equal(embeds, embed_audio(model, waves, 16000, seed=5))
    rng = np.random.default_rng(5)
    built = [build_fusion_features(w, model.frontend, CLIP, "repeatpad", rng=rng) for w in waves]
    assert [longer for _, longer in built] == [True, False]
    with torch.no_grad():
        expected = model.encode_audio(torch.stack([f for f, _ in built]), torch.tensor([True, False]))
    assert torch.allclose(embeds, expected, atol=1e-6)


def test_embed_text_needs_a_tokenizer(tmp_path):
    model = _model(False)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        embed_text(model, ["a dog"])
    from clap_train.data.tokenizer import train_bpe_tokenizer

    train_bpe_tokenizer(["a dog barks", "a cat"] * 10, vocab_size=300).save(str(tmp_path / "tokenizer.json"))
    by_argument = embed_text(model, ["a dog", "a cat"], tokenizer=str(tmp_path))
    assert by_argument.shape == (2, 32)
    model.tokenizer_path = str(tmp_path)  # what load_model attaches
    assert torch.equal(embed_text(model, ["a dog", "a cat"]), by_argument)
    with pytest.raises(ValueError, match="list of strings"):
        embed_text(model, "a dog")
