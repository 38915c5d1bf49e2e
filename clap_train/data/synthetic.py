"""The embedded demo dataset: synthetic sounds with compositional captions, as real tar shards.

Each clip combines a source (sine tone, square wave, chord, chirp, white or brown noise), a
register (low / middle / high, or bright / dark for noise) and a temporal envelope (steady,
pulsing slowly or quickly, fading in or out); its caption names all three, e.g. "a low sine
tone pulsing slowly" or "bright white noise fading in". A model can only retrieve the right
clip by hearing all three factors, so recall after training shows that it learned.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from clap_train.data.shard_format import SIZES_FILE, ShardWriter, encode_flac
from clap_train.data.tokenizer import train_bpe_tokenizer

log = logging.getLogger(__name__)

TONAL = {"sine tone": "sine", "square wave": "square", "major chord": "major", "rising chirp": "up",
         "falling chirp": "down"}
NOISE = {"white noise": "white", "brown noise": "brown"}
REGISTERS = {"low": (110.0, 220.0), "middle": (330.0, 660.0), "high": (1200.0, 2400.0)}
ENVELOPES = ("steadily", "pulsing slowly", "pulsing quickly", "fading in", "fading out")


def _envelope(name: str, t: np.ndarray, duration: float) -> np.ndarray:
    if name == "pulsing slowly":
        return (np.sin(2 * np.pi * 1.5 * t) > 0).astype(np.float32)
    if name == "pulsing quickly":
        return (np.sin(2 * np.pi * 6.0 * t) > 0).astype(np.float32)
    if name == "fading in":
        return t / duration
    if name == "fading out":
        return 1.0 - t / duration
    return np.ones_like(t)


def _tone(kind: str, f0: float, t: np.ndarray) -> np.ndarray:
    if kind == "sine":
        return np.sin(2 * np.pi * f0 * t)
    if kind == "square":
        return np.sign(np.sin(2 * np.pi * f0 * t)) * 0.6
    if kind == "major":
        return sum(np.sin(2 * np.pi * f0 * r * t) for r in (1.0, 1.26, 1.5)) / 3
    ratio = 2.0 if kind == "up" else 0.5  # an octave sweep, exponential in frequency
    phase = 2 * np.pi * f0 * t[-1] * (ratio ** (t / t[-1]) - 1) / np.log(ratio)
    return np.sin(phase)


def _noise(kind: str, register: str, n: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(n)
    if kind == "brown":
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(101) / 101, mode="same")  # remove drift
    if register != "middle":  # bright = first difference (high-pass), dark = moving average (low-pass)
        noise = np.diff(noise, prepend=0.0) if register == "high" else np.convolve(noise, np.ones(8) / 8, "same")
    return noise / (np.abs(noise).max() + 1e-8)


def make_clip(rng: np.random.Generator, sample_rate: int, duration: float) -> tuple[np.ndarray, str]:
    """One random clip (float32, peak 0.5) and its caption."""
    t = np.arange(int(sample_rate * duration)) / sample_rate
    register = rng.choice(list(REGISTERS))
    envelope = rng.choice(ENVELOPES)
    if rng.random() < 0.7:
        source = rng.choice(list(TONAL))
        low, high = REGISTERS[register]
        wave = _tone(TONAL[source], rng.uniform(low, high), t)
        caption = f"a {register} {source} {envelope}" if envelope != "steadily" else f"a steady {register} {source}"
    else:
        source = rng.choice(list(NOISE))
        wave = _noise(NOISE[source], register, len(t), rng)
        colour = {"low": "dark", "middle": "plain", "high": "bright"}[register]
        caption = f"{colour} {source} {envelope}" if envelope != "steadily" else f"steady {colour} {source}"
    wave = wave * _envelope(envelope, t, duration) + 0.01 * rng.standard_normal(len(t))
    return (0.5 * wave / (np.abs(wave).max() + 1e-8)).astype(np.float32), caption


def _write_split(out_dir: Path, split: str, num_samples: int, samples_per_shard: int, rng, sample_rate, duration,
                 folds: int = 0):
    """Write one split; with `folds`, clip i carries `original_data.fold` = i % folds + 1 (as ESC-50's importer)."""
    captions = []
    with ShardWriter(out_dir, split, samples_per_shard) as writer:
        for i in range(num_samples):
            wave, caption = make_clip(rng, sample_rate, duration)
            # the sound source is the clip's tag: the zero-shot classes of the demo's validation set
            tags = [source for source in (*TONAL, *NOISE) if source in caption]
            meta = {"text": [caption], "tags": tags, **({"original_data": {"fold": i % folds + 1}} if folds else {})}
            writer.write(f"{split}_{i:06d}", encode_flac(wave, sample_rate), meta)
            captions.append(caption)
    return captions


def ensure_synthetic_dataset(
    out_dir: str, num_train: int = 2048, num_val: int = 128, samples_per_shard: int = 256,
    sample_rate: int = 16000, duration: float = 2.0, vocab_size: int = 1000, seed: int = 0,
) -> Path:
    """Generate the demo dataset into `out_dir` unless one with the same arguments is already there.

    Writes train-*.tar, val-*.tar and sizes.json with `clap_train.data.shard_format.ShardWriter`, and
    tokenizer.json (a BPE trained on the captions). Completion is marked by `synthetic.json`
    (the arguments), written last and atomically; an incomplete or different dataset is rebuilt.
    """
    out = Path(out_dir)
    settings = {"num_train": num_train, "num_val": num_val, "samples_per_shard": samples_per_shard,
                "sample_rate": sample_rate, "duration": duration, "vocab_size": vocab_size, "seed": seed,
                "tags": True, "val_folds": 5}  # tags = source, 5 folds in val; rebuilds demo caches made before
    marker = out / "synthetic.json"
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for stale in [marker, out / SIZES_FILE, *out.glob("train-*.tar"), *out.glob("val-*.tar")]:
        stale.unlink(missing_ok=True)
    log.info("generating the synthetic demo dataset in %s", out)
    rng = np.random.default_rng(seed)
    captions = _write_split(out, "train", num_train, samples_per_shard, rng, sample_rate, duration)
    _write_split(out, "val", num_val, max(1, num_val // 2), rng, sample_rate, duration, folds=5)
    train_bpe_tokenizer(captions, vocab_size).save(str(out / "tokenizer.json"))
    tmp = out / "synthetic.json.tmp"
    tmp.write_text(json.dumps(settings, indent=1))
    os.replace(tmp, marker)
    return out
