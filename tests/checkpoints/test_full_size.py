"""Full-size parity: HTSAT-tiny + RoBERTa-base transformers ClapModels (random weights, fused and
unfused) saved with save_pretrained and read back with load_model."""

import gc

import pytest
import torch

from clap_train import load_model
from tests.checkpoints._clap import LONGER_MIXES, TINY_FRAMES, hf_features, log_mel, random_hf_clap, tokens


@pytest.mark.slow
def test_full_size_parity_fused_and_unfused(tmp_path):
    input_ids, mask = tokens(2, 20, 50265)
    for fused in (False, True):
        hf = random_hf_clap({}, {}, enable_fusion=fused, projection_dim=512)  # all transformers defaults
        hf.save_pretrained(tmp_path / str(fused))
        ours = load_model(tmp_path / str(fused))
        features = log_mel(3, 4 if fused else 1, TINY_FRAMES, 64)
        flags = torch.tensor(LONGER_MIXES["some" if fused else "none"])
        with torch.no_grad():
            audio_ref = hf_features(hf.get_audio_features(input_features=features, is_longer=flags[:, None]))
            audio = ours.encode_audio(features, flags)
            text_ref = hf_features(hf.get_text_features(input_ids=input_ids, attention_mask=mask))
            text = ours.encode_text(input_ids, mask)
        assert audio.shape == (3, 512) and text.shape == (2, 512)
        assert (audio - audio_ref).abs().max() < 1e-4, fused
        assert (text - text_ref).abs().max() < 1e-4, fused
        del hf, ours
        gc.collect()
