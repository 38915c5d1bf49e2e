"""load_model on transformers CLAP directories and LAION .pt files: full-model parity with ClapModel."""

import json

import pytest
import torch
from transformers import ClapFeatureExtractor

from clap_train import load_model
from clap_train.checkpoints.laion import LAION_DROPPED
from tests.checkpoints._clap import (
    LONGER_MIXES,
    SMALL_AUDIO,
    SMALL_FRAMES,
    SMALL_TEXT,
    hf_features,
    hf_to_laion_layout,
    log_mel,
    random_hf_clap,
    tokens,
)

TOL = 1e-4
# LAION files do not record RoBERTa's head count; the loader assumes 64-wide heads (roberta-base / -large).
LAION_TEXT = {**SMALL_TEXT, "hidden_size": 64, "num_attention_heads": 1}


def _audio_diff(hf, ours, features, longer) -> float:
    flags = torch.tensor(longer)
    with torch.no_grad():
        reference = hf_features(hf.get_audio_features(input_features=features, is_longer=flags[:, None]))
        output = ours.encode_audio(features, flags)
    assert output.shape == reference.shape
    return (output - reference).abs().max().item()


def _text_diff(hf, ours, vocab) -> float:
    input_ids, mask = tokens(3, 12, vocab)
    with torch.no_grad():
        reference = hf_features(hf.get_text_features(input_ids=input_ids, attention_mask=mask))
        output = ours.encode_text(input_ids, mask)
    assert output.shape == reference.shape
    return (output - reference).abs().max().item()


@pytest.fixture(scope="module", params=[False, True], ids=["unfused", "fused"])
def hf_dir_pair(request, tmp_path_factory):
    hf = random_hf_clap(SMALL_AUDIO, SMALL_TEXT, enable_fusion=request.param)
    directory = tmp_path_factory.mktemp("hf_clap")
    hf.save_pretrained(directory)
    return hf, load_model(directory), request.param


def test_hf_dir_text_parity(hf_dir_pair):
    hf, ours, _ = hf_dir_pair
    assert ours.text_encoder.layer_norm_eps == 1e-12  # taken from the HF config
    assert _text_diff(hf, ours, SMALL_TEXT["vocab_size"]) < TOL


def test_hf_dir_audio_parity(hf_dir_pair):
    hf, ours, fused = hf_dir_pair
    features = log_mel(3, 4 if fused else 1, SMALL_FRAMES, SMALL_AUDIO["num_mel_bins"])
    for mix in LONGER_MIXES.values() if fused else [LONGER_MIXES["none"]]:  # is_longer only matters when fused
        assert _audio_diff(hf, ours, features, mix) < TOL, mix


def test_hf_dir_logit_scales_and_mode(hf_dir_pair):
    hf, ours, fused = hf_dir_pair
    assert not ours.training
    assert ours.logit_scale_a.shape == (1,)
    assert torch.equal(ours.logit_scale_a, hf.logit_scale_a.reshape(1))
    assert torch.equal(ours.logit_scale_t, hf.logit_scale_t.reshape(1))
    assert ours.audio_encoder.enable_fusion == fused


@pytest.mark.parametrize("truncation, mel_scale, norm", [("fusion", "htk", None), ("rand_trunc", "slaney", "slaney")])
def test_hf_dir_frontend_follows_preprocessor(tmp_path, truncation, mel_scale, norm):
    random_hf_clap(SMALL_AUDIO, SMALL_TEXT, enable_fusion=False).save_pretrained(tmp_path)
    ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, fft_window_size=400, frequency_min=20,
                         frequency_max=7000, max_length_s=4, truncation=truncation).save_pretrained(tmp_path)
    frontend = load_model(tmp_path).frontend
    assert (frontend.mel_scale, frontend.norm, frontend.sample_rate) == (mel_scale, norm, 16000)
    assert (frontend.n_fft, frontend.hop_length, frontend.n_mels, frontend.f_min, frontend.f_max) == (
        400, 160, 16, 20, 7000)
    assert load_model(tmp_path).clip_samples == 64000


def test_hf_dir_without_preprocessor_uses_fusion_flag(hf_dir_pair):
    _, ours, fused = hf_dir_pair
    assert ours.frontend.mel_scale == ("htk" if fused else "slaney")
    assert (ours.frontend.sample_rate, ours.frontend.f_min, ours.frontend.f_max) == (48000, 50, 14000)


def test_hf_dir_unexpected_and_missing_keys_raise(tmp_path):
    from safetensors.torch import load_file, save_file

    random_hf_clap(SMALL_AUDIO, SMALL_TEXT, enable_fusion=False).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file({**state, "audio_model.extra_head.weight": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(KeyError, match="extra_head"):
        load_model(tmp_path)
    del state["text_model.pooler.dense.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(KeyError, match="pooler.bias"):
        load_model(tmp_path)


def test_hf_dir_unsupported_config_raises(tmp_path):
    random_hf_clap(SMALL_AUDIO, SMALL_TEXT, enable_fusion=False).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["text_config"]["hidden_act"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="text_config.hidden_act"):
        load_model(tmp_path)


# ---- LAION .pt ----

@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_laion_checkpoint_parity(tmp_path, fused):
    hf = random_hf_clap(SMALL_AUDIO, LAION_TEXT, enable_fusion=fused, text_eps=1e-5)  # LAION's RoBERTa eps
    path = tmp_path / "laion.pt"
    torch.save({"epoch": 3, "state_dict": hf_to_laion_layout(hf.state_dict())}, path)
    ours = load_model(path)
    assert ours.audio_encoder.enable_fusion == fused
    assert (ours.audio_encoder.embed_dim, ours.audio_encoder.depths, ours.audio_encoder.num_heads) == (
        16, (2, 2, 2), (1, 2, 4))
    assert ours.text_encoder.layer_norm_eps == 1e-5
    assert ours.frontend.mel_scale == ("htk" if fused else "slaney")
    assert _text_diff(hf, ours, LAION_TEXT["vocab_size"]) < TOL
    features = log_mel(3, 4 if fused else 1, SMALL_FRAMES, SMALL_AUDIO["num_mel_bins"])
    for mix in LONGER_MIXES.values() if fused else [LONGER_MIXES["none"]]:
        assert _audio_diff(hf, ours, features, mix) < TOL
    assert torch.equal(ours.logit_scale_a, hf.logit_scale_a.reshape(1))


def test_laion_unknown_key_raises_and_drop_list_is_explicit(tmp_path):
    state = hf_to_laion_layout(random_hf_clap(SMALL_AUDIO, SMALL_TEXT, enable_fusion=False).state_dict())
    torch.save({"state_dict": {**state, "module.audio_branch.new_head.weight": torch.zeros(3)}}, tmp_path / "x.pt")
    with pytest.raises(KeyError, match="new_head"):
        load_model(tmp_path / "x.pt")
    assert any("tscam_conv" in pattern for pattern in LAION_DROPPED)


def test_laion_without_module_prefix_and_missing_key(tmp_path):
    state = hf_to_laion_layout(random_hf_clap(SMALL_AUDIO, SMALL_TEXT, enable_fusion=False).state_dict())
    state = {k.removeprefix("module."): v for k, v in state.items()}
    torch.save(state, tmp_path / "bare.pt")  # a bare state dict also loads
    assert load_model(tmp_path / "bare.pt").audio_encoder.output_dim == 64
    del state["audio_branch.norm.bias"]
    torch.save({"state_dict": state}, tmp_path / "missing.pt")
    with pytest.raises(KeyError, match="audio_encoder.norm.bias"):
        load_model(tmp_path / "missing.pt")


def test_laion_pann_checkpoint_is_rejected(tmp_path):
    torch.save({"state_dict": {"module.audio_branch.conv_block1.conv1.weight": torch.zeros(1),
                               "module.text_branch.pooler.dense.weight": torch.zeros(1)}}, tmp_path / "pann.pt")
    with pytest.raises(ValueError, match="only HTSAT"):
        load_model(tmp_path / "pann.pt")


def test_unrecognised_file_raises(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(KeyError, match="not a LAION-CLAP checkpoint"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.pt")
