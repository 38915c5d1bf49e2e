"""Named, picklable pipeline stages: tar sample -> decoded clip -> cropped clip -> batch.

Every stage is a small class (no lambdas: data workers may be spawned). A stage raises on a bad
sample; the pipeline's `SkipCounter` handler skips it and counts it.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
import zlib
from collections import Counter

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from clap_train.data.audio_ops import crop_or_pad, int16_roundtrip
from clap_train.data.tokenizer import CaptionTokenizer

log = logging.getLogger(__name__)
AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg")


class BadSample(ValueError):
    """A sample that cannot be used (no audio, no caption, silence of length 0, NaN)."""


class SkipCounter:
    """webdataset exception handler: count the bad sample, log rate-limited, keep going.

    `take_count()` returns the number skipped since the last call; the collate stage puts it
    into each batch (`num_skipped`) so the training process can total it across workers.
    """

    def __init__(self, log_interval_s: float = 60.0):
        self.log_interval_s = log_interval_s
        self.total = 0
        self.reasons: Counter = Counter()
        self._untaken = 0
        self._last_log = 0.0

    def __call__(self, exn: Exception) -> bool:
        self.total += 1
        self._untaken += 1
        self.reasons[type(exn).__name__] += 1
        now = time.monotonic()
        if now - self._last_log >= self.log_interval_s:
            self._last_log = now
            log.warning("skipped %d bad samples so far (%s); latest: %s", self.total, dict(self.reasons), exn)
        return True

    def take_count(self) -> int:
        count, self._untaken = self._untaken, 0
        return count


def _mono_float(wave: np.ndarray) -> np.ndarray:
    return (wave.mean(axis=1) if wave.ndim == 2 else wave).astype(np.float32)


class DecodeSample:
    """Raw tar sample -> {'key', 'wave' (L,) float32 mono at `sample_rate`, 'texts', 'tags'}.

    Captions come from json `text` (str or list); `text_augment_t5` (keyword-to-caption
    output) is kept under 'augmented_texts'. Raises BadSample naming the key and the problem.
    """

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate

    def __call__(self, sample: dict) -> dict:
        key = sample.get("__key__", "?")
        ext = next((e for e in AUDIO_EXTENSIONS if e in sample), None)
        if ext is None:
            raise BadSample(f"{key}: no audio member ({'/'.join(AUDIO_EXTENSIONS)})")
        if "json" not in sample:
            raise BadSample(f"{key}: no json member")
        meta = json.loads(sample["json"])
        texts = meta.get("text")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        texts = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
        if not texts:
            raise BadSample(f"{key}: empty or missing 'text'")
        wave, rate = sf.read(io.BytesIO(sample[ext]), dtype="float32", always_2d=False)
        wave = _mono_float(wave)
        if wave.size == 0:
            raise BadSample(f"{key}: zero-length audio")
        if not np.isfinite(wave).all():
            raise BadSample(f"{key}: non-finite audio samples")
        if rate != self.sample_rate:
            wave = AF.resample(torch.from_numpy(wave), rate, self.sample_rate).numpy()
        augmented = meta.get("text_augment_t5") or []
        augmented = [augmented] if isinstance(augmented, str) else list(augmented)
        return {"key": key, "wave": wave, "texts": texts, "augmented_texts": augmented,
                "tags": list(meta.get("tags") or [])}


class CropPad:
    """Crop/pad 'wave' to `clip_samples` (see `audio_ops.crop_or_pad`), set 'is_longer'.

    `deterministic=True` (evaluation) seeds the crop from the sample key so every run and every
    rank count sees the same crop; otherwise a per-process RNG is used.
    """

    def __init__(self, clip_samples: int, truncation: str = "rand_trunc", padding: str = "repeatpad",
                 int16: bool = False, deterministic: bool = False):
        self.clip_samples, self.truncation, self.padding = clip_samples, truncation, padding
        self.int16, self.deterministic = int16, deterministic
        self._rng = None

    def __call__(self, sample: dict) -> dict:
        if self.deterministic:
            rng = np.random.default_rng(zlib.crc32(sample["key"].encode()))
        else:
            self._rng = self._rng or np.random.default_rng()
            rng = self._rng
        wave = int16_roundtrip(sample["wave"]) if self.int16 else sample["wave"]
        sample["wave"], sample["is_longer"] = crop_or_pad(wave, self.clip_samples, self.truncation, self.padding, rng)
        return sample


class ChooseCaption:
    """Training: keep one caption per clip. With probability `augmented_prob` it is drawn from
    the keyword-to-caption captions (when the clip has any), else from the original ones.
    Evaluation (`keep_all=True`): keep every original caption (multi-caption protocol)."""

    def __init__(self, augmented_prob: float = 0.0, keep_all: bool = False):
        if not 0.0 <= augmented_prob <= 1.0:
            raise ValueError(f"augmented_prob must be in [0, 1], got {augmented_prob}")
        self.augmented_prob, self.keep_all = augmented_prob, keep_all
        self._rng = None

    def __call__(self, sample: dict) -> dict:
        if self.keep_all:
            return sample
        self._rng = self._rng or random.Random()
        pool = sample["texts"]
        if sample["augmented_texts"] and self._rng.random() < self.augmented_prob:
            pool = sample["augmented_texts"]
        sample["texts"] = [self._rng.choice(pool)]
        return sample


class Collate:
    """List of samples -> batch dict (keys in docs/ARCHITECTURE.md); tokenises captions."""

    def __init__(self, tokenizer: CaptionTokenizer, skip_counter: SkipCounter | None = None):
        self.tokenizer, self.skip_counter = tokenizer, skip_counter

    def __call__(self, samples: list[dict]) -> dict:
        texts, text_to_audio = [], []
        for i, sample in enumerate(samples):
            texts += sample["texts"]
            text_to_audio += [i] * len(sample["texts"])
        batch = self.tokenizer(texts)
        batch["waveform"] = torch.stack([s["wave"] for s in samples])  # (B, clip_samples)
        batch["is_longer"] = torch.tensor([s["is_longer"] for s in samples], dtype=torch.bool)
        batch["text_to_audio"] = torch.tensor(text_to_audio, dtype=torch.long)
        batch["key"] = [s["key"] for s in samples]
        batch["num_skipped"] = torch.tensor(self.skip_counter.take_count() if self.skip_counter else 0)
        return batch
