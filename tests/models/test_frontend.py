"""Audio front end parity with transformers' ClapFeatureExtractor (hub settings: frequency_min=50),
plus the pure crop / pad / fusion helpers the data pipeline uses."""

import numpy as np
import pytest
import torch
from transformers import ClapFeatureExtractor

from clap_train.signal.audio_ops import crop_or_pad, int16_roundtrip, pad_to_length
from clap_train.signal.frontend import LogMelFrontend
from clap_train.signal.fusion import build_fusion_features, fusion_crop_ranges

SR, CLIP = 48000, 480000
DB_TOLERANCE = 1e-3


def _audio(num_samples: int, seed: int = 0) -> np.ndarray:
    """Tones plus noise at a realistic level, float32 like decoded audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    tones = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * np.sin(2 * np.pi * 3100.0 * t + 1.0)
    return (tones + 0.05 * rng.standard_normal(num_samples)).astype(np.float32)


def _hf(truncation: str, padding: str = "repeatpad") -> ClapFeatureExtractor:
    return ClapFeatureExtractor(frequency_min=50, truncation=truncation, padding=padding)


def _hf_features(extractor: ClapFeatureExtractor, wave: np.ndarray) -> tuple[np.ndarray, bool]:
    out = extractor(wave, sampling_rate=SR, return_tensors="np")
    return out["input_features"][0], bool(out["is_longer"][0, 0])


class _FixedStart:
    """Stands in for a Generator: `integers` returns a chosen start and records the range asked for."""

    def __init__(self, start: int):
        self.start, self.calls = start, []

    def integers(self, low: int, high: int) -> int:
        self.calls.append((low, high))
        return self.start


@pytest.fixture(scope="module")
def slaney_frontend() -> LogMelFrontend:
    return LogMelFrontend(mel_scale="slaney", norm="slaney")


@pytest.fixture(scope="module")
def htk_frontend() -> LogMelFrontend:
    return LogMelFrontend(mel_scale="htk", norm=None)


def test_filter_banks_match_hf():
    hf = _hf("fusion")
    slaney, htk = LogMelFrontend(mel_scale="slaney", norm="slaney"), LogMelFrontend(mel_scale="htk", norm=None)
    assert np.abs(slaney.mel_fbank.numpy() - hf.mel_filters_slaney).max() < 1e-8
    assert np.abs(htk.mel_fbank.numpy() - hf.mel_filters).max() < 1e-6


def test_unfused_random_crop_matches_hf(slaney_frontend, monkeypatch):
    wave, start = _audio(CLIP + 12345), 6789
    hf_calls = []
    monkeypatch.setattr(np.random, "randint", lambda low, high: hf_calls.append((low, high)) or start)
    reference, hf_longer = _hf_features(_hf("rand_trunc"), wave)
    rng = _FixedStart(start)
    clip, longer = crop_or_pad(wave, CLIP, "rand_trunc", "repeatpad", rng)
    assert rng.calls == hf_calls == [(0, 12346)]  # same uniform range, upper bound exclusive
    assert longer and hf_longer
    ours = slaney_frontend(clip[None])[0].numpy()
    assert ours.shape == reference.shape == (1, 1001, 64)
    assert np.abs(ours - reference).max() < DB_TOLERANCE


@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
@pytest.mark.parametrize("num_samples", [70001, CLIP])
def test_unfused_padding_matches_hf(slaney_frontend, padding, num_samples):
    wave = _audio(num_samples, seed=1)
    reference, hf_longer = _hf_features(_hf("rand_trunc", padding), wave)
    clip, longer = crop_or_pad(wave, CLIP, "rand_trunc", padding)
    assert not longer and not hf_longer
    assert np.abs(slaney_frontend(clip[None])[0].numpy() - reference).max() < DB_TOLERANCE


def _recording_choice(monkeypatch, seed: int) -> tuple[list, list]:
    """Replace np.random.choice (HF's fusion crop draw) by a seeded pick that records options and picks."""
    options_seen, picks, rng = [], [], np.random.default_rng(seed)

    def choice(options):
        options = np.asarray(options)
        options_seen.append((int(options[0]), int(options[-1]), len(options)))
        picks.append(int(options[rng.integers(len(options))]))
        return picks[-1]

    monkeypatch.setattr(np.random, "choice", choice)
    return options_seen, picks


@pytest.mark.parametrize("extra_samples", [3 * SR + 777, 500, 1500])  # 3 s longer; 1 and 3 spare frames
def test_fusion_long_clip_matches_hf(htk_frontend, monkeypatch, extra_samples):
    wave = _audio(CLIP + extra_samples, seed=2)
    options_seen, picks = _recording_choice(monkeypatch, seed=5)
    reference, hf_longer = _hf_features(_hf("fusion"), wave)
    total_frames = (CLIP + extra_samples) // 480 + 1
    assert [(first, last) for first, last, _ in options_seen] == fusion_crop_ranges(total_frames, 1001)
    ours, longer = build_fusion_features(wave, htk_frontend, CLIP, crop_starts=tuple(picks))
    assert longer and hf_longer
    assert ours.shape == reference.shape == (4, 1001, 64)
    assert np.abs(ours.numpy() - reference).max() < DB_TOLERANCE


@pytest.mark.parametrize("num_samples", [CLIP + 100, CLIP, 200000])
@pytest.mark.parametrize("padding", ["repeatpad", "pad"])
def test_fusion_short_clip_matches_hf(htk_frontend, num_samples, padding):
    """Up to one hop too long, exactly the window, or padded: four copies of one log-mel, not longer.
    (HF then flags a random row of an all-short batch as longer; that is a batch rule, not per clip.)"""
    wave = _audio(num_samples, seed=3)
    reference, _ = _hf_features(_hf("fusion", padding), wave)
    ours, longer = build_fusion_features(wave, htk_frontend, CLIP, padding=padding)
    assert not longer
    assert torch.equal(ours[0], ours[3])
    assert np.abs(ours.numpy() - reference).max() < DB_TOLERANCE


def test_fusion_random_starts_fall_in_their_thirds(htk_frontend):
    wave = _audio(CLIP + 2 * SR, seed=4)
    ranges = fusion_crop_ranges((CLIP + 2 * SR) // 480 + 1, 1001)
    mel = htk_frontend(torch.from_numpy(wave)[None])[0, 0]
    features, _ = build_fusion_features(wave, htk_frontend, CLIP, rng=np.random.default_rng(0))
    for view, (first, last) in zip(features[1:], ranges):
        starts = [s for s in range(first, last + 1) if torch.equal(mel[s:s + 1001], view)]
        assert len(starts) == 1
    again, _ = build_fusion_features(wave, htk_frontend, CLIP, rng=np.random.default_rng(0))
    assert torch.equal(features, again)
    with pytest.raises(ValueError, match="crop_starts"):
        build_fusion_features(wave, htk_frontend, CLIP, crop_starts=(0, 0, 10_000))


@pytest.mark.parametrize("num_samples", range(1002, 1012))
def test_fusion_crop_ranges_follow_array_split(num_samples):
    parts = np.array_split(np.arange(num_samples - 1001 + 1), 3)
    expected = [(int(p[0]), int(p[-1])) if len(p) else (0, 0) for p in parts]
    assert fusion_crop_ranges(num_samples, 1001) == expected


def test_double_precision_frontend_is_closer_to_hf():
    wave = _audio(CLIP, seed=6)
    reference, _ = _hf_features(_hf("fusion"), wave)
    double = LogMelFrontend(mel_scale="htk", norm=None, double_precision=True)
    ours = double(torch.from_numpy(wave)[None])
    assert ours.dtype == torch.float32
    assert np.abs(ours[0, 0].numpy() - reference[0]).max() < 2e-5


@pytest.mark.parametrize("n_mels", [1, 3, 64])
def test_cpu_blocks_and_whole_batch_paths_match_torch_stft(n_mels):
    """The CPU path (one clip, blocks of frames, banded mel projection) and the accelerator path (whole
    batch at once, taken here through `_frames` / `_mel_power` on CPU) both equal torch.stft + dense mel."""
    frontend = LogMelFrontend(SR, 1024, 480, n_mels, 50, 14000, "slaney", "slaney")
    wave = torch.from_numpy(np.stack([_audio(SR * 7 // 5, seed) for seed in range(3)]))  # (3, L): 281 frames
    spec = torch.stft(wave, 1024, 480, window=frontend.window, center=True, pad_mode="reflect", return_complex=True)
    reference = 10 * torch.log10(((spec.abs() ** 2).transpose(1, 2) @ frontend.mel_fbank).clamp_min(1e-10))
    whole_batch = 10 * torch.log10(frontend._mel_power(frontend._frames(wave)).clamp_min(1e-10))
    assert torch.allclose(frontend(wave)[:, 0], reference, atol=1e-3)
    assert torch.allclose(whole_batch, reference, atol=1e-3)
    with pytest.raises(ValueError, match="waveform"):
        frontend(wave[0])


def test_crop_or_pad_modes():
    wave = np.arange(1, 4, dtype=np.float32)  # [1, 2, 3]
    assert pad_to_length(torch.from_numpy(wave), 8, "repeatpad").tolist() == [1, 2, 3, 1, 2, 3, 0, 0]
    assert pad_to_length(torch.from_numpy(wave), 8, "repeat").tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert pad_to_length(torch.from_numpy(wave), 8, "pad").tolist() == [1, 2, 3, 0, 0, 0, 0, 0]
    long = np.arange(10, dtype=np.float32)
    clip, longer = crop_or_pad(long, 4, "head")
    assert clip.tolist() == [0, 1, 2, 3] and longer
    clip, _ = crop_or_pad(long, 4, "rand_trunc", rng=np.random.default_rng(3))
    again, _ = crop_or_pad(torch.from_numpy(long), 4, "rand_trunc", rng=np.random.default_rng(3))
    assert torch.equal(clip, again) and clip.diff().eq(1).all()
    assert long.tolist() == list(range(10))  # input untouched
    for kwargs, bad in (({"truncation": "fusion"}, "truncation"), ({"padding": "loop"}, "padding")):
        with pytest.raises(ValueError, match=bad):
            crop_or_pad(wave, 8, **kwargs)
    with pytest.raises(ValueError, match="1-D"):
        crop_or_pad(np.zeros((2, 5), dtype=np.float32), 8)


def test_int16_roundtrip_truncates_toward_zero_and_clips():
    out = int16_roundtrip(np.array([1.5, -2.0, 0.5, -0.5, 1e-5, -1e-5], dtype=np.float32))
    expected = np.array([32767, -32767, 16383, -16383, 0, 0], dtype=np.float32) / 32767.0
    assert np.array_equal(out.numpy(), expected)


def test_autocast_does_not_reach_the_front_end():
    """Under bf16-mixed the model runs in an autocast region; the mel projection must stay float32."""
    frontend = LogMelFrontend(8000, 256, 128, 16, 20, 4000)
    wave = torch.randn(2, 4000) * 0.1
    expected = frontend(wave)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(frontend(wave), expected)
