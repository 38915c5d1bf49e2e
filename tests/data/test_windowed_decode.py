"""Windowed decode under rand_trunc / head equals full decode + crop, sample for sample; the pcm16 codec
round-trips and decodes to the same samples as FLAC; make_shards --codec pcm16 shards feed the pipeline."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from clap_train.data.audio_codecs import decode_pcm16, encode_pcm16
from clap_train.data.stages import BadSample, CropPad, DecodeSample, Resample, ToMono, sample_stages
from clap_train.signal.frontend import LogMelFrontend
from data_pipelines.encode import encode_row, quantise_pcm16
from data_pipelines.make_shards import make_shards
from data_pipelines.shards import encode_flac, iter_tar

RATE, CLIP = 48000, 4800  # 0.1 s windows out of 2 s clips: 20x longer


def clip(seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((int(seconds * RATE), channels))).clip(-1, 1).astype(np.float32)


def encoded(ext: str, channels: int = 1, seconds: float = 2.0, rate: int = RATE) -> bytes:
    wave = clip(seconds, channels)
    if ext == "pcm16":
        return encode_pcm16(quantise_pcm16(wave[:, 0]), rate)
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=ext.upper(), subtype="VORBIS" if ext == "ogg" else "PCM_16")
    return buffer.getvalue()


def tar_sample(ext: str, data: bytes, key: str = "k") -> dict:
    return {"__key__": key, ext: data, "json": json.dumps({"text": ["a clip"]}).encode()}


def run(stages, sample):
    for stage in stages:
        sample = stage(sample)
    return sample


@pytest.mark.parametrize("ext, channels", [("flac", 1), ("flac", 2), ("wav", 2), ("pcm16", 1)])
@pytest.mark.parametrize("truncation", ["rand_trunc", "head"])
def test_windowed_decode_equals_full_decode_and_crop(ext, channels, truncation):
    data = encoded(ext, channels)
    windowed = [DecodeSample(RATE, CLIP), ToMono(), Resample(RATE), CropPad(CLIP, truncation)]
    full = [DecodeSample(), ToMono(), Resample(RATE), CropPad(CLIP, truncation)]
    assert windowed[0](tar_sample(ext, data))["wave"] is None  # the window path is the one under test
    starts = set()
    for seed in range(12):
        windowed[3].set_seed(seed)
        full[3].set_seed(seed)
        a, b = run(windowed, tar_sample(ext, data)), run(full, tar_sample(ext, data))
        assert a["wave"].shape == (CLIP,) and a["is_longer"] and b["is_longer"]
        assert torch.equal(a["wave"], b["wave"]), seed
        starts.add(tuple(a["wave"][:8].tolist()))
    assert len(starts) > 6 if truncation == "rand_trunc" else len(starts) == 1  # windows at many seek points


def test_default_stages_use_windows_only_where_they_equal():
    stages = sample_stages(RATE, CLIP, "rand_trunc")
    assert stages[0].crop_samples == CLIP
    frontend = LogMelFrontend(RATE, 1024, 480, 64, 50, 14000, "htk", None).config()
    assert sample_stages(RATE, CLIP, "fusion", frontend=frontend)[0].crop_samples is None  # fusion: whole clip
    short = stages[0](tar_sample("flac", encoded("flac", seconds=0.05)))  # shorter than the window: padded
    other_rate = stages[0](tar_sample("flac", encoded("flac", rate=44100)))  # resampled first
    lossy = stages[0](tar_sample("ogg", encoded("ogg")))  # not sample-exact seeking
    assert all(sample["wave"] is not None for sample in (short, other_rate, lossy))


def test_pcm16_round_trip_and_same_samples_as_flac():
    wave = clip(0.5)[:, 0]
    pcm = quantise_pcm16(wave)
    back, rate = decode_pcm16(encode_pcm16(pcm, 22050))
    assert rate == 22050 and np.array_equal(back, pcm)
    flac = encode_flac(wave, RATE)
    assert np.array_equal(sf.read(io.BytesIO(flac), dtype="int16")[0], pcm)
    from_flac = DecodeSample()(tar_sample("flac", flac))["wave"]
    from_pcm16 = DecodeSample()(tar_sample("pcm16", encode_pcm16(pcm, RATE)))["wave"]
    assert from_pcm16.dtype == np.float32 and np.array_equal(from_flac, from_pcm16)
    for bad in (b"\x80\xbb\x00\x00\x01", b"\x00\x00\x00\x00\x01\x00", b""):
        with pytest.raises(BadSample, match="undecodable pcm16"):
            DecodeSample()(tar_sample("pcm16", bad))


def test_make_shards_pcm16_codec_feeds_the_pipeline(tmp_path):
    from tests.data_pipelines.conftest import write_audio

    rows = []
    for i in range(3):
        path = write_audio(tmp_path / f"{i}.wav", 0.3 + 0.1 * i, 44100, 2)
        rows.append({"audio": str(path), "key": f"c{i}", "text": [f"clip {i}"], "tags": [], "original_data": {}})
    flac_report = make_shards(rows, tmp_path / "flac", samples_per_shard=8)
    pcm_report = make_shards(rows, tmp_path / "pcm16", samples_per_shard=8, codec="pcm16")
    assert pcm_report["written"] == flac_report["written"] == 3
    flac = dict(iter_tar(tmp_path / "flac" / "train-000000.tar"))
    pcm16 = dict(iter_tar(tmp_path / "pcm16" / "train-000000.tar"))
    assert set(pcm16["c1"]) == {"pcm16", "json"}
    stages = sample_stages(RATE, 9600, "rand_trunc", train=False)
    for key, members in flac.items():
        a = run(stages, {"__key__": key, **members})
        b = run(stages, {"__key__": key, **pcm16[key]})
        assert torch.equal(a["wave"], b["wave"]) and a["texts"] == b["texts"]
    assert encode_row(rows[0], "pcm16")["pcm_sha1"] == encode_row(rows[0], "flac")["pcm_sha1"]
