"""Shards for the online pipeline tests, written by the offline tool `data_pipelines.make_shards`.

Clips are short sines (0.2-0.6 s) at 16 kHz; make_shards stores them as 48 kHz FLAC. The
pipeline under test reads them back at 16 kHz with a 0.4 s window, so some clips are longer
than the window and some shorter.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from clap_train.data.tokenizer import train_bpe_tokenizer
from data_pipelines.make_shards import make_shards
from data_pipelines.manifest import read_manifest
from data_pipelines.shards import encode_flac, iter_tar, update_sizes, write_tar

SAMPLE_RATE = 16000
CLIP_SAMPLES = 6400  # 0.4 s
UNICODE_CAPTION = "ein Hund bellt – 犬が吠える 🐕"


def build_shards(root: Path, prefix: str, num_samples: int, samples_per_shard: int, split: str = "train") -> Path:
    """`num_samples` clips with keys `{prefix}_{i:04d}` -> make_shards -> root/out/{split}-*.tar + sizes.json."""
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(prefix) * 1000 + num_samples)
    lines = []
    for i in range(num_samples):
        seconds = 0.2 + 0.4 * (i % 3) / 2  # 0.2, 0.4, 0.6 s
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        wave = 0.5 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(str(audio_dir / f"{i}.wav"), wave.astype(np.float32), SAMPLE_RATE)
        lines.append(json.dumps({"audio": f"audio/{i}.wav", "key": f"{prefix}_{i:04d}",
                                 "caption": [f"{prefix} clip number {i}", f"{prefix} sound {i}"],
                                 "tags": [f"tag{i % 5}", prefix]}))
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = root / "out"
    report = make_shards(read_manifest(manifest), out, split=split, samples_per_shard=samples_per_shard)
    assert report["written"] == num_samples and report["num_skipped"] == 0
    return out


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    texts = [f"{p} clip number {i}" for p in ("a", "b") for i in range(50)] + [UNICODE_CAPTION, "the sound of tag"]
    train_bpe_tokenizer(texts, 300).save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def source_a(tmp_path_factory) -> Path:
    """48 clips `a_0000..a_0047` in 8 shards of 6."""
    return build_shards(tmp_path_factory.mktemp("a"), "a", 48, 6)


@pytest.fixture(scope="session")
def source_b(tmp_path_factory) -> Path:
    """12 clips `b_0000..b_0011` in 2 shards of 6."""
    return build_shards(tmp_path_factory.mktemp("b"), "b", 12, 6)


@pytest.fixture(scope="session")
def one_shard(tmp_path_factory) -> Path:
    """10 clips `c_0000..c_0009` in a single shard."""
    return build_shards(tmp_path_factory.mktemp("c"), "c", 10, 10)


def _wav_bytes(wave: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


BAD_KEYS = ("bad_truncated", "bad_random", "bad_nojson", "bad_emptycaption", "bad_nan", "bad_empty", "bad_noaudio")


@pytest.fixture(scope="session")
def corrupt_dir(tmp_path_factory, source_b) -> Path:
    """Two shards: source_b's good samples plus one of each kind of bad member, and a unicode caption.

    Bad (keys in BAD_KEYS): a FLAC cut after 100 bytes, random bytes named .flac, audio without json,
    an empty caption, NaN audio, zero-length audio, json without audio. Good extra: `u_unicode`.
    """
    out = tmp_path_factory.mktemp("corrupt")
    good = [s for shard in sorted(source_b.glob("train-*.tar")) for s in iter_tar(shard)]
    flac = good[0][1]["flac"]
    meta = json.dumps({"text": ["a broken clip"]}).encode()
    bad = [
        ("bad_truncated", {"flac": flac[:100], "json": meta}),
        ("bad_random", {"flac": np.random.default_rng(0).bytes(3000), "json": meta}),
        ("bad_nojson", {"flac": flac}),
        ("bad_emptycaption", {"flac": flac, "json": json.dumps({"text": ["  "]}).encode()}),
        ("bad_nan", {"wav": _wav_bytes(np.full(3000, np.nan, dtype=np.float32)), "json": meta}),
        ("bad_empty", {"wav": _wav_bytes(np.zeros(0, dtype=np.float32)), "json": meta}),
        ("bad_noaudio", {"json": meta}),
        ("u_unicode", {"flac": encode_flac(np.sin(np.arange(8000) / 5.0) * 0.3, SAMPLE_RATE),
                       "json": json.dumps({"text": [UNICODE_CAPTION]}, ensure_ascii=False).encode()}),
    ]
    samples = good[:3] + bad[:4] + good[3:8] + bad[4:] + good[8:]
    sizes = {"train-000000.tar": write_tar(out / "train-000000.tar", samples[:10]),
             "train-000001.tar": write_tar(out / "train-000001.tar", samples[10:])}
    update_sizes(out, sizes)
    return out
