"""Whisper audio tower: front end equal to WhisperFeatureExtractor, encoder equal to transformers'
WhisperEncoder (random weights), pooling over the frames that hold audio, init from a Whisper directory."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from clap_train.checkpoints.pretrained import load_pretrained_whisper
from clap_train.models.audio.whisper import WhisperEncoder, audio_token_mask
from clap_train.signal.whisper_frontend import WhisperFrontend

transformers = pytest.importorskip("transformers")
CONF = str(Path(__file__).resolve().parents[2] / "conf")
RATE = 16000
DEBUG = {"d_model": 32, "num_layers": 2, "num_heads": 2, "ffn_dim": 64, "max_source_positions": 100}


def _clips(lengths, seed=0):
    """Tones plus noise with a decaying envelope, float32, one per length (samples)."""
    rng = np.random.default_rng(seed)
    clips = []
    for length in lengths:
        t = np.arange(length) / RATE
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) * np.exp(-t / 3)
        clips.append((tone + 0.01 * rng.standard_normal(length)).astype(np.float32))
    return clips


def _hf_config(num_mel_bins=80, d_model=32, num_layers=2, num_heads=2, ffn_dim=64, max_source_positions=100):
    return transformers.WhisperConfig(
        num_mel_bins=num_mel_bins, d_model=d_model, encoder_layers=num_layers, encoder_attention_heads=num_heads,
        encoder_ffn_dim=ffn_dim, max_source_positions=max_source_positions, decoder_layers=1,
        decoder_attention_heads=num_heads, decoder_ffn_dim=ffn_dim, vocab_size=100, max_target_positions=16,
        pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=3)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_frontend_matches_whisper_feature_extractor(n_mels):
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    clips = _clips([3 * RATE, 30 * RATE, 31 * RATE + 17, 12345])  # short, exact, longer (trimmed), odd
    expected = extractor(clips, sampling_rate=RATE, return_tensors="np").input_features  # (B, n_mels, 3000)
    frontend = WhisperFrontend(n_mels=n_mels)
    padded = torch.zeros(len(clips), 31 * RATE + 17)
    ours = []
    for clip in clips:  # each clip alone: the front end zero-pads and trims to 30 s itself
        ours.append(frontend(torch.from_numpy(clip)[None])[0, 0].T.numpy())
    assert ours[0].shape == (n_mels, 3000)
    max_db = 40.0 * max(np.abs(o - e).max() for o, e in zip(ours, expected))  # one unit = 40 dB
    assert max_db < 1e-3, max_db
    padded[0, :3 * RATE] = torch.from_numpy(clips[0])
    batched = frontend(padded)[0, 0].T.numpy()  # a zero-padded row in a batch = the clip alone
    assert 40.0 * np.abs(batched - expected[0]).max() < 1e-3


def test_frontend_reads_int16_and_rejects_bad_shapes():
    frontend = WhisperFrontend(num_samples=RATE)
    wave = torch.from_numpy(_clips([RATE])[0])[None]
    q = (wave * 32767).round().to(torch.int16)
    torch.testing.assert_close(frontend(q), frontend(q.float() / 32767))
    with pytest.raises(ValueError, match="waveform"):
        frontend(wave[0])


def _reference_and_ours(seed=0, **geometry):
    torch.manual_seed(seed)
    reference = transformers.WhisperModel(_hf_config(**geometry)).encoder.eval()
    ours = WhisperEncoder(**geometry).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # transformers' names
    return reference, ours


def test_debug_encoder_matches_transformers_and_pools_over_audio():
    reference, ours = _reference_and_ours(**DEBUG)
    frontend = WhisperFrontend(num_samples=2 * RATE)
    lengths = [2 * RATE, RATE, 4000]
    waves = torch.zeros(3, 2 * RATE)
    for row, clip in enumerate(_clips(lengths)):
        waves[row, :len(clip)] = torch.from_numpy(clip)
    features = frontend(waves)  # (3, 1, 200, 80)
    with torch.no_grad():
        expected = reference(features[:, 0].transpose(1, 2)).last_hidden_state  # (3, 100, 32)
        hidden = ours.hidden_states(features)
        pooled = ours(features)
    assert (hidden - expected).abs().max().item() < 1e-4
    mask = audio_token_mask(features, 100)
    num_tokens = mask.sum(dim=1).tolist()
    # HF's frame attention mask (ceil(L / hop) frames), 2 frames a token; our last frame also counts the
    # frames whose 400-sample window still overlaps the audio's end: at most one token more
    hf_tokens = [math.ceil(math.ceil(length / 160) / 2) for length in lengths]
    assert all(abs(n - h) <= 1 for n, h in zip(num_tokens, hf_tokens)), (num_tokens, hf_tokens)
    for row, n in enumerate(num_tokens):
        assert (pooled[row] - expected[row, :n].mean(dim=0)).abs().max().item() < 1e-4
    assert num_tokens[0] == 100 and num_tokens[2] < 20


def test_encoder_rejects_a_window_of_the_wrong_length():
    with pytest.raises(ValueError, match="num_samples"):
        WhisperEncoder(**DEBUG)(torch.zeros(1, 1, 150, 80))


def test_init_from_a_transformers_whisper_directory(tmp_path):
    torch.manual_seed(2)
    source = transformers.WhisperForConditionalGeneration(_hf_config(**DEBUG))
    source.save_pretrained(tmp_path)
    encoder = WhisperEncoder(**DEBUG)
    report = load_pretrained_whisper(encoder, tmp_path)
    assert report.kept == [] and report.skipped and all(k.startswith(("model.decoder.", "proj_out."))
                                                        for k in report.skipped)
    state = source.state_dict()
    assert torch.equal(encoder.layers[1].fc2.weight, state["model.encoder.layers.1.fc2.weight"])
    assert torch.equal(encoder.conv1.bias, state["model.encoder.conv1.bias"])
    with pytest.raises(ValueError, match="shapes do not match"):
        load_pretrained_whisper(WhisperEncoder(**{**DEBUG, "ffn_dim": 48}), tmp_path)


def test_experiment_resamples_to_the_tower_rate_and_pads_with_zeros():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("train", overrides=["+experiment=whisper_roberta", "data.train_shards=/x/a.tar",
                                          "data.tokenizer=/x/tok.json"])
    assert cfg.data.sample_rate == 16000 and cfg.data.clip_samples == 480000 and cfg.data.padding == "pad"
    assert cfg.model.frontend.num_samples == 480000


@pytest.mark.slow
def test_whisper_base_preset_matches_transformers():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        model_config = compose("train", overrides=["model=whisper_base_roberta"]).model
    torch.manual_seed(0)
    ours = instantiate(model_config.audio_encoder).eval()
    frontend = instantiate(model_config.frontend)
    reference = transformers.WhisperModel(_hf_config(80, 512, 6, 8, 2048, 1500)).encoder.eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    waves = torch.zeros(2, 480000)
    for row, clip in enumerate(_clips([480000, 7 * RATE], seed=3)):
        waves[row, :len(clip)] = torch.from_numpy(clip)
    features = frontend(waves)
    with torch.no_grad():
        expected = reference(features[:, 0].transpose(1, 2)).last_hidden_state  # (2, 1500, 512)
        hidden = ours.hidden_states(features)
        pooled = ours(features)
    assert (hidden - expected).abs().max().item() < 1e-4
    assert (pooled[1] - expected[1, :audio_token_mask(features, 1500)[1].sum()].mean(dim=0)).abs().max() < 1e-4
