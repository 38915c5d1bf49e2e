"""Unit tests of each online stage on hand-made samples."""

from __future__ import annotations

import io
import json
import logging
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from clap_train.data.stages import (
    BadSample,
    ChooseCaption,
    Collate,
    CropPad,
    DecodeSample,
    FusionFeatures,
    Int16Quantise,
    Int16RoundTrip,
    Resample,
    SkipCounter,
    ToMono,
    sample_stages,
)
from clap_train.data.tokenizer import CaptionTokenizer
from clap_train.signal.audio_ops import int16_roundtrip, int16_to_float, pad_to_length
from clap_train.signal.frontend import LogMelFrontend

FRONTEND = {"sample_rate": 16000, "n_fft": 256, "hop_length": 160, "n_mels": 16, "f_min": 50, "f_max": 8000,
            "mel_scale": "htk", "norm": None}


def _encoded(wave: np.ndarray, rate: int = 16000, fmt: str = "FLAC") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt, subtype="FLOAT" if fmt == "WAV" else "PCM_16")
    return buffer.getvalue()


def _raw(key="k", audio=None, meta=None, ext="flac"):
    sample = {"__key__": key}
    if audio is not None:
        sample[ext] = audio
    if meta is not None:
        sample["json"] = json.dumps(meta, ensure_ascii=False).encode()
    return sample


def test_decode_reads_stereo_captions_and_augmented_texts():
    stereo = np.stack([np.linspace(-0.5, 0.5, 800), np.zeros(800)], axis=1).astype(np.float32)
    out = DecodeSample()(_raw(audio=_encoded(stereo, 8000), meta={"text": " a dog ", "text_augment_t5": ["t5 cap"],
                                                                  "tags": ["dog"]}))
    assert out["wave"].shape == (800, 2) and out["rate"] == 8000
    assert out["texts"] == ["a dog"] and out["augmented_texts"] == ["t5 cap"] and out["tags"] == ["dog"]
    assert out["fold"] == -1
    mono = Resample(16000)(ToMono()(out))
    assert mono["wave"].shape == (1600,) and mono["rate"] == 16000 and mono["wave"].dtype == torch.float32


@pytest.mark.parametrize("sample, reason", [
    (_raw(meta={"text": ["x"]}), "no audio"),
    (_raw(audio=b"x" * 10), "no json"),
    (_raw(audio=np.random.default_rng(0).bytes(2000), meta={"text": ["x"]}), "undecodable"),
    (_raw(audio=_encoded(np.zeros(500, np.float32))[:60], meta={"text": ["x"]}), "undecodable|zero-length"),
    (_raw(audio=_encoded(np.zeros(500, np.float32)), meta={"text": ["", " "]}), "empty or missing"),
    (_raw(audio=_encoded(np.zeros(500, np.float32)), meta={"tags": ["x"]}), "empty or missing"),
    (_raw(audio=_encoded(np.full(500, np.nan, np.float32), fmt="WAV"), meta={"text": "x"}, ext="wav"), "non-finite"),
    (_raw(audio=_encoded(np.zeros(0, np.float32), fmt="WAV"), meta={"text": "x"}, ext="wav"), "zero-length"),
    ({"__key__": "k", "flac": b"", "json": b"{not json"}, "unreadable json"),
])
def test_decode_rejects_bad_samples(sample, reason):
    with pytest.raises(BadSample, match=reason):
        DecodeSample()(sample)


def test_skip_counter_counts_and_logs_rate_limited(caplog):
    skip = SkipCounter(log_interval_s=3600)
    with caplog.at_level(logging.WARNING):
        assert all(skip(BadSample(f"bad {i}")) for i in range(5))
    assert skip.total == 5 and skip.take_count() == 5 and skip.take_count() == 0
    assert len([r for r in caplog.records if "skipped" in r.message]) == 1


def test_int16_round_trip_quantises():
    sample = Int16RoundTrip()({"wave": torch.tensor([0.3, -1.5, 1e-6])})
    assert torch.allclose(sample["wave"] * 32767, (sample["wave"] * 32767).round(), atol=1e-3)
    assert sample["wave"][1] == -1.0 and sample["wave"][2] == 0.0


def test_int16_quantise_keeps_q_and_commutes_with_the_crop():
    wave = torch.tensor([0.3, -1.5, 1e-6, 0.9999, -0.25])
    quantised = Int16Quantise()({"wave": wave})["wave"]
    assert quantised.dtype == torch.int16 and quantised.tolist() == [9830, -32767, 0, 32763, -8191]
    assert torch.equal(int16_to_float(quantised), Int16RoundTrip()({"wave": wave})["wave"])
    padded = CropPad(12, "head", "repeatpad")({"key": "k", "wave": wave})
    assert torch.equal(int16_to_float(Int16Quantise()(padded)["wave"]), pad_to_length(int16_roundtrip(wave), 12, "repeatpad"))


def test_crop_pad_seeded_and_deterministic_for_eval():
    wave = torch.arange(1000, dtype=torch.float32)
    crop = CropPad(300, "rand_trunc")
    crop.set_seed(7)
    first = [crop({"key": "k", "wave": wave})["wave"][0].item() for _ in range(5)]
    crop.set_seed(7)
    assert [crop({"key": "k", "wave": wave})["wave"][0].item() for _ in range(5)] == first
    assert len(set(first)) > 1
    evaluation = CropPad(300, "rand_trunc", deterministic=True)
    assert evaluation({"key": "k", "wave": wave})["wave"].equal(evaluation({"key": "k", "wave": wave})["wave"])
    short = CropPad(300, "rand_trunc", "repeatpad")({"key": "s", "wave": torch.ones(100)})
    assert short["wave"].shape == (300,) and not short["is_longer"]
    with pytest.raises(ValueError, match="truncation"):
        CropPad(300, "fusion")


def test_choose_caption_follows_probabilities():
    choose = ChooseCaption({"original": 0.6, "augmented": 0.3, "all": 0.1})
    choose.set_seed(0)
    picks = [choose({"texts": ["orig"], "augmented_texts": ["aug"]})["texts"][0] for _ in range(4000)]
    # P(orig) = 0.6 + 0.1 * 1/2, P(aug) = 0.3 + 0.1 * 1/2
    assert abs(picks.count("orig") / 4000 - 0.65) < 0.03
    assert choose({"texts": ["orig"], "augmented_texts": []})["texts"] == ["orig"]  # no augmented: original
    keep = ChooseCaption({"augmented": 1.0}, keep_all=True)
    assert keep({"texts": ["a", "b"], "augmented_texts": ["c"]})["texts"] == ["a", "b"]
    with pytest.raises(ValueError, match="caption_probs"):
        ChooseCaption({"t5": 1.0})
    with pytest.raises(ValueError, match="caption_probs"):
        ChooseCaption({"original": 0.0})


def test_fusion_features_shapes_pickle_and_is_longer():
    stage = FusionFeatures(LogMelFrontend(**FRONTEND), 3200)  # the model's front end, rebuilt in each worker
    assert stage.frontend_kwargs == LogMelFrontend(**FRONTEND).config()
    stage = pickle.loads(pickle.dumps(stage))
    stage.set_seed(0)
    long = stage({"key": "l", "wave": torch.randn(8000)})
    short = stage({"key": "s", "wave": torch.randn(1000)})
    assert long["features"].shape == (4, 21, 16) and long["is_longer"] and "wave" not in long
    assert short["features"].shape == (4, 21, 16) and not short["is_longer"]
    assert torch.equal(short["features"][0], short["features"][3])
    with pytest.raises(ValueError, match="f_min"):
        FusionFeatures({**FRONTEND, "f_max": 9000}, 3200)


def test_fold_from_original_data_reaches_the_batch(tokenizer_path):
    audio = _encoded(np.zeros(800, np.float32))
    folds = [DecodeSample()(_raw(audio=audio, meta={"text": "x", "original_data": data}))["fold"]
             for data in ({"dataset": "esc50", "fold": 3}, {"fold": "2"}, {"fold": "a"}, "text", {"fold": True})]
    assert folds == [3, 2, -1, -1, -1]
    samples = [{"key": f"k{i}", "wave": torch.zeros(100), "is_longer": False, "texts": ["x"], "fold": fold}
               for i, fold in enumerate((3, -1))]
    assert Collate(CaptionTokenizer(tokenizer_path, 77))(samples)["fold"].tolist() == [3, -1]


def test_collate_batches_waveform_or_features(tokenizer_path):
    tokenizer = CaptionTokenizer(tokenizer_path, 77)
    skip = SkipCounter()
    skip(BadSample("x"))
    samples = [{"key": f"k{i}", "wave": torch.zeros(100), "is_longer": i == 1, "texts": ["a clip"] * (i + 1)}
               for i in range(2)]
    batch = Collate(tokenizer, skip)(samples)
    assert batch["waveform"].shape == (2, 100) and batch["input_ids"].shape == (3, 77)
    assert batch["text_to_audio"].tolist() == [0, 1, 1] and batch["is_longer"].tolist() == [False, True]
    assert batch["num_skipped"].item() == 1 and batch["key"] == ["k0", "k1"]
    fused = Collate(tokenizer)([{"key": "f", "features": torch.zeros(4, 5, 6), "is_longer": True, "texts": ["x"]}])
    assert fused["features"].shape == (1, 4, 5, 6) and "waveform" not in fused


def test_sample_stages_validates_and_pickles():
    stages = sample_stages(16000, 3200, "fusion", frontend=FRONTEND, int16=True)
    assert [type(s).__name__ for s in pickle.loads(pickle.dumps(stages))] == [
        "DecodeSample", "ToMono", "Resample", "Int16RoundTrip", "FusionFeatures", "ChooseCaption"]
    with pytest.raises(ValueError, match="frontend: truncation 'fusion' builds the features with the model's"):
        sample_stages(16000, 3200, "fusion")
    with pytest.raises(ValueError, match="sample_rate 48000 differs from the front end's 16000"):
        sample_stages(48000, 3200, "fusion", frontend=FRONTEND)
    with pytest.raises(ValueError, match="truncation"):
        sample_stages(16000, 3200, "middle")
