"""Named, picklable pipeline stages: tar sample -> decoded clip -> cropped clip (or fusion features) -> batch.

Every stage is a small class (no lambdas: data workers may be spawned). A stage raises `BadSample`
on a sample it cannot use; the pipeline's `SkipCounter` handler skips it and counts it. Stages that
draw random numbers own a generator that the pipeline seeds per (seed, rank, worker) through
`set_seed`, so a training stream is reproducible for a fixed seed.

Sample dict keys along the way: `key`, `audio` (encoded bytes) and `meta` (parsed json) after
`DecodeSample` ... `wave` ((C, L) numpy from decode, (L,) float32 tensor after `ToMono`), `rate`,
`texts`, `augmented_texts`, `tags`, then `is_longer` and, on the fusion path, `features` (4, T, F).
With windowed decode, 'wave' is None and 'reader' (an `audio_codecs.ClipReader`) holds the clip
from `DecodeSample` until `CropPad` reads its window.
"""

from __future__ import annotations

import json
import logging
import random
import time
import zlib
from collections import Counter

import numpy as np
import torch
import torchaudio.functional as AF
from torch.utils.data import default_collate

from clap_train.data.audio_codecs import ClipReader
from clap_train.data.shard_format import AUDIO_MEMBERS
from clap_train.data.tokenizer import CaptionTokenizer
from clap_train.signal.audio_ops import TRUNCATIONS, crop_or_pad, crop_start, int16_quantise, int16_roundtrip
from clap_train.signal.frontend import LogMelFrontend
from clap_train.signal.fusion import build_fusion_features

log = logging.getLogger(__name__)
CAPTION_SOURCES = ("original", "augmented", "all")


class BadSample(ValueError):
    """A sample that cannot be used (undecodable or empty audio, NaN, no json, no caption)."""


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
        self._last_log = -float("inf")

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


class _Seeded:
    """Mixin: a per-stage `random.Random`, reseeded by the pipeline in each worker."""

    _rng: random.Random | None = None

    def set_seed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def rng(self) -> random.Random:
        if self._rng is None:
            self._rng = random.Random()
        return self._rng

    def numpy_rng(self) -> np.random.Generator:
        return np.random.default_rng(self.rng().getrandbits(63))


def _as_list(value) -> list[str]:
    values = [value] if isinstance(value, str) else list(value or [])
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


class DecodeSample:
    """Raw tar sample -> {'key', 'wave' (L, C) float32 numpy, 'rate', 'texts', 'augmented_texts', 'tags', 'fold'}.

    Audio is decoded in memory (`audio_codecs.ClipReader`: libsndfile, or a view of `pcm16` bytes);
    captions come from json `text` (str or list), keyword-to-caption ones from the json fields
    `augmented_fields` (default `text_augment_t5`; keyword_to_caption --field names others).
    Windowed decode: with `crop_rate` and `crop_samples` set, a clip already at `crop_rate`, longer
    than `crop_samples` and in a seekable format (flac, wav, pcm16) is not decoded here: 'wave' is
    None and 'reader' holds it, for `CropPad` to decode only the window it takes (same samples).
    Raises:
        BadSample naming the key: no audio or json member, bad json, no caption, undecodable,
        zero-length or non-finite audio.
    """

    def __init__(self, crop_rate: int | None = None, crop_samples: int | None = None,
                 augmented_fields: tuple[str, ...] = ("text_augment_t5",)):
        self.crop_rate, self.crop_samples = crop_rate, crop_samples
        self.augmented_fields = tuple(augmented_fields)

    def __call__(self, sample: dict) -> dict:
        key = sample.get("__key__", "?")
        ext = next((e for e in AUDIO_MEMBERS if e in sample), None)
        if ext is None:
            raise BadSample(f"{key}: no audio member ({'/'.join(AUDIO_MEMBERS)})")
        if "json" not in sample:
            raise BadSample(f"{key}: no json member")
        try:
            meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as error:
            raise BadSample(f"{key}: unreadable json: {error}") from error
        texts = _as_list(meta.get("text"))
        if not texts:
            raise BadSample(f"{key}: empty or missing 'text'")
        augmented = [text for field in self.augmented_fields for text in _as_list(meta.get(field))]
        out = {"key": key, "texts": texts, "augmented_texts": augmented,
               "tags": _as_list(meta.get("tags")), "fold": _fold(meta)}
        try:
            reader = ClipReader(sample[ext], ext)
            if (self.crop_samples is not None and reader.seekable and reader.rate == self.crop_rate
                    and reader.frames > self.crop_samples):
                return {**out, "wave": None, "reader": reader, "rate": reader.rate}
            wave = reader.read()  # (L, C)
        except Exception as error:  # libsndfile raises LibsndfileError, RuntimeError, TypeError...
            raise BadSample(f"{key}: undecodable {ext}: {error}") from error
        return {**out, "wave": _checked(wave, key), "rate": int(reader.rate)}


def _checked(wave: np.ndarray, key: str) -> np.ndarray:
    if wave.size == 0:
        raise BadSample(f"{key}: zero-length audio")
    if not np.isfinite(wave).all():
        raise BadSample(f"{key}: non-finite audio samples")
    return wave


def _mono(wave: np.ndarray) -> torch.Tensor:
    """(L, C) numpy -> (L,) float32 tensor sharing memory where it can (one channel: column 0)."""
    tensor = torch.from_numpy(wave)
    if tensor.dim() == 2:
        tensor = tensor[:, 0] if tensor.shape[1] == 1 else tensor.mean(dim=1)
    return tensor


def _fold(meta: dict) -> int:
    """The evaluation fold in json `original_data.fold` (ESC-50's 1..5, written by the importer), else -1."""
    original = meta.get("original_data")
    fold = original.get("fold") if isinstance(original, dict) else None
    try:
        return int(fold) if fold is not None and not isinstance(fold, bool) else -1
    except (TypeError, ValueError):
        return -1


class ToMono:
    """'wave' (L, C) numpy -> (L,) float32 tensor, the mean of the channels."""

    def __call__(self, sample: dict) -> dict:
        if sample["wave"] is not None:  # None: windowed decode, CropPad reads and downmixes the window
            sample["wave"] = _mono(sample["wave"])  # (L,)
        return sample


class Resample:
    """'wave' (L,) at sample['rate'] -> (L',) at `sample_rate` (torchaudio's windowed-sinc resampler)."""

    def __init__(self, sample_rate: int):
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
        self.sample_rate = sample_rate

    def __call__(self, sample: dict) -> dict:
        if sample["wave"] is None:
            return sample  # windowed decode: DecodeSample checked that the clip is at this rate
        if sample["rate"] != self.sample_rate:
            sample["wave"] = AF.resample(sample["wave"], sample["rate"], self.sample_rate)
            sample["rate"] = self.sample_rate
        if sample["wave"].numel() == 0:
            raise BadSample(f"{sample['key']}: zero-length audio after resampling")
        return sample


class Int16RoundTrip:
    """LAION's int16 quantisation of 'wave', kept float32 (`audio_ops.int16_roundtrip`): before fusion features."""

    def __call__(self, sample: dict) -> dict:
        sample["wave"] = int16_roundtrip(sample["wave"])
        return sample


class Int16Quantise:
    """LAION's int16 quantisation of the cropped 'wave', kept as int16 q (`audio_ops.int16_quantise`): the
    batch's `waveform` is then int16 and the model's front end reads it as q / 32767. Same values as
    `Int16RoundTrip` before the crop (the quantisation is per sample and maps 0 to 0)."""

    def __call__(self, sample: dict) -> dict:
        sample["wave"] = int16_quantise(sample["wave"])
        return sample


def _key_rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


class CropPad(_Seeded):
    """Crop/pad 'wave' to `clip_samples` (see `audio_ops.crop_or_pad`), set 'is_longer'.

    `deterministic=True` (evaluation) seeds the crop from the sample key, so every run and every
    rank count sees the same crop; otherwise the stage's seeded generator draws it.
    Raises ValueError naming `truncation` unless it is "rand_trunc" or "head".
    """

    def __init__(self, clip_samples: int, truncation: str = "rand_trunc", padding: str = "repeatpad",
                 deterministic: bool = False):
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS} here, got {truncation!r}")
        self.clip_samples, self.truncation, self.padding = clip_samples, truncation, padding
        self.deterministic = deterministic

    def __call__(self, sample: dict) -> dict:
        rng = _key_rng(sample["key"]) if self.deterministic else self.numpy_rng()
        reader = sample.pop("reader", None)
        if reader is not None:  # windowed decode (DecodeSample): the same draw as crop_or_pad, one window read
            start = crop_start(reader.frames, self.clip_samples, self.truncation, rng)
            try:
                window = reader.read(start, self.clip_samples)  # (clip_samples, C)
            except Exception as error:  # libsndfile errors on a corrupt frame inside the clip
                raise BadSample(f"{sample['key']}: undecodable audio window: {error}") from error
            if window.shape[0] != self.clip_samples:
                raise BadSample(f"{sample['key']}: {window.shape[0]} samples at {start}, header said {reader.frames}")
            sample["wave"], sample["is_longer"] = _mono(_checked(window, sample["key"])), True
            return sample
        sample["wave"], sample["is_longer"] = crop_or_pad(sample["wave"], self.clip_samples, self.truncation,
                                                          self.padding, rng)
        return sample


class FusionFeatures(_Seeded):
    """'wave' -> 'features' (4, clip_samples // hop + 1, n_mels) and 'is_longer' for fused models
    (`clap_train.signal.fusion.build_fusion_features`); the waveform is dropped to keep worker IPC small.

    Args:
        frontend: the model's `LogMelFrontend`, or its `config()` dict (fused checkpoints use mel_scale
            "htk", norm None). Each worker rebuilds it from the plain arguments, so the stage pickles small.
        clip_samples, padding: as for `CropPad`.
        deterministic: crop starts seeded from the sample key (evaluation).
    Raises:
        ValueError naming a bad front-end argument.
    """

    def __init__(self, frontend: LogMelFrontend | dict, clip_samples: int, padding: str = "repeatpad",
                 deterministic: bool = False):
        self.frontend_kwargs = frontend.config() if isinstance(frontend, LogMelFrontend) else dict(frontend)
        self.clip_samples, self.padding, self.deterministic = clip_samples, padding, deterministic
        self._frontend = None
        self._build_frontend()  # fail at construction on bad front-end arguments

    def _build_frontend(self) -> LogMelFrontend:
        if self._frontend is None:
            self._frontend = LogMelFrontend(**self.frontend_kwargs)
        return self._frontend

    def __getstate__(self):
        return {**self.__dict__, "_frontend": None}

    def __call__(self, sample: dict) -> dict:
        rng = _key_rng(sample["key"]) if self.deterministic else self.numpy_rng()
        features, is_longer = build_fusion_features(sample.pop("wave"), self._build_frontend(), self.clip_samples,
                                                    self.padding, rng)
        sample["features"], sample["is_longer"] = features, is_longer  # (4, T, F)
        return sample


class ChooseCaption(_Seeded):
    """Training: keep one caption per clip. A pool is drawn with `probs` — "original" (json `text`),
    "augmented" (keyword-to-caption `text_augment_t5`) or "all" (both) — then a caption uniformly
    from it; a clip without augmented captions uses its original ones.
    Evaluation (`keep_all=True`): keep every original caption (multi-caption protocol).

    Raises ValueError naming `probs` for unknown pools, negative values or a zero sum.
    """

    def __init__(self, probs: dict[str, float] | None = None, keep_all: bool = False):
        probs = dict(probs or {"original": 1.0})
        unknown = set(probs) - set(CAPTION_SOURCES)
        if unknown or any(p < 0 for p in probs.values()) or sum(probs.values()) <= 0:
            raise ValueError(f"caption_probs must map {CAPTION_SOURCES} to non-negative weights with a "
                             f"positive sum, got {probs}")
        self.pools, self.weights = list(probs), list(probs.values())
        self.keep_all = keep_all

    def __call__(self, sample: dict) -> dict:
        if self.keep_all:
            return sample
        rng = self.rng()
        pool_name = rng.choices(self.pools, self.weights)[0]
        pool = {"original": sample["texts"], "augmented": sample["augmented_texts"],
                "all": sample["texts"] + sample["augmented_texts"]}[pool_name] or sample["texts"]
        sample["texts"] = [rng.choice(pool)]
        return sample


class Collate:
    """List of samples -> batch dict (keys in docs/ARCHITECTURE.md and docs/data.md); tokenises captions.

    Audio goes to `waveform` (B, clip_samples) (float32, or int16 after `Int16Quantise`), or to `features` (B, 4, T, F) when the samples
    carry fusion features. `num_skipped` holds the bad samples this worker dropped since its
    previous batch.
    """

    def __init__(self, tokenizer: CaptionTokenizer, skip_counter: SkipCounter | None = None):
        self.tokenizer, self.skip_counter = tokenizer, skip_counter

    def __call__(self, samples: list[dict]) -> dict:
        texts, text_to_audio = [], []
        for i, sample in enumerate(samples):
            texts += sample["texts"]
            text_to_audio += [i] * len(sample["texts"])
        batch = self.tokenizer(texts)  # input_ids, attention_mask: (N, max_length)
        # default_collate stacks straight into shared memory inside a dataloader worker: no copy on the way out.
        if "features" in samples[0]:
            batch["features"] = default_collate([s["features"] for s in samples])  # (B, 4, T, F)
        else:
            batch["waveform"] = default_collate([s["wave"] for s in samples])  # (B, clip_samples)
        batch["is_longer"] = torch.tensor([s["is_longer"] for s in samples], dtype=torch.bool)
        batch["text_to_audio"] = torch.tensor(text_to_audio, dtype=torch.long)
        batch["key"] = [s["key"] for s in samples]
        batch["captions"] = texts  # (N) caption strings, for evaluation reports
        batch["tags"] = [list(s.get("tags", ())) for s in samples]  # (B) shard tags, zero-shot targets
        batch["fold"] = torch.tensor([s.get("fold", -1) for s in samples], dtype=torch.long)  # (B) -1: none
        batch["num_skipped"] = torch.tensor(self.skip_counter.take_count() if self.skip_counter else 0)
        return batch


def sample_stages(sample_rate: int, clip_samples: int, truncation: str = "rand_trunc", padding: str = "repeatpad",
                  int16: bool = False, caption_probs: dict[str, float] | None = None,
                  frontend: dict | None = None, train: bool = True,
                  augmented_fields: tuple[str, ...] = ("text_augment_t5",)) -> list:
    """The per-sample stages in order: decode, mono, resample, crop/pad then [int16] or [int16] then fusion,
    caption. With `int16` the unfused path yields an int16 `waveform` batch (q standing for q / 32767).

    Evaluation (`train=False`) crops deterministically and keeps every caption.
    `frontend`: the model's `LogMelFrontend.config()`, used (and required) by truncation "fusion".
    Raises ValueError naming `truncation` (one of rand_trunc, head, fusion), `frontend` or `sample_rate`
    (must equal the front end's rate).
    """
    windowed = {"crop_rate": sample_rate, "crop_samples": clip_samples} if truncation in TRUNCATIONS else {}
    if isinstance(augmented_fields, str) or not all(isinstance(f, str) and f for f in augmented_fields):
        raise ValueError(f"augmented_fields must be a list of json field names, got {augmented_fields!r}")
    stages = [DecodeSample(**windowed, augmented_fields=tuple(augmented_fields)), ToMono(), Resample(sample_rate)]
    if truncation == "fusion":
        if frontend is None:
            raise ValueError("frontend: truncation 'fusion' builds the features with the model's front end "
                             "(data.frontend: ${model.frontend})")
        if frontend.get("sample_rate", sample_rate) != sample_rate:
            raise ValueError(f"sample_rate {sample_rate} differs from the front end's {frontend['sample_rate']}")
        stages += [Int16RoundTrip()] if int16 else []
        stages.append(FusionFeatures(frontend, clip_samples, padding, deterministic=not train))
    elif truncation in TRUNCATIONS:
        stages.append(CropPad(clip_samples, truncation, padding, deterministic=not train))
        stages += [Int16Quantise()] if int16 else []  # after the crop: fewer samples, and an int16 batch
    else:
        raise ValueError(f"truncation must be one of {(*TRUNCATIONS, 'fusion')}, got {truncation!r}")
    stages.append(ChooseCaption(caption_probs, keep_all=not train))
    return stages
