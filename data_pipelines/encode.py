"""One manifest row -> one shard sample: decode, downmix, resample to 48 kHz, encode, fingerprint.

Runs in make_shards' worker processes. Codecs of the stored audio member:

| codec | member | bytes | decoding in the loader |
|---|---|---|---|
| `flac` (default) | `<key>.flac` | 16-bit FLAC (sizes: docs/data.md) | libsndfile (seeks: windowed decode) |
| `pcm16` | `<key>.pcm16` | 4-byte little-endian rate + little-endian int16 mono samples | none: a view of the bytes |

The formats are defined in clap_train.data.audio_codecs (the loader's side). Both hold the same
int16 samples (`quantise_pcm16` rounds as libsndfile's FLAC writer does), so a clip's fingerprint
is the same whatever the codec.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import soundfile as sf

from clap_train.data.audio_codecs import ClipReader, decode_pcm16, encode_pcm16
from data_pipelines.captions import template_caption
from data_pipelines.shards import TARGET_SAMPLE_RATE, decode_audio, encode_flac, to_mono_48k

CODECS = ("flac", "pcm16")
__all__ = ["CODECS", "decode_pcm16", "encode_pcm16", "encode_row", "member_seconds", "pcm16_hash", "quantise_pcm16"]


def pcm16_hash(pcm: np.ndarray) -> str:
    """The clip fingerprint: SHA-1 of (L,) int16 samples, little-endian (data_pipelines.fingerprint)."""
    return hashlib.sha1(np.ascontiguousarray(pcm, dtype="<i2").tobytes()).hexdigest()


def member_seconds(data: bytes, ext: str) -> float:
    """Duration of a shard audio member from its header (no decode)."""
    reader = ClipReader(data, ext)
    return reader.frames / reader.rate


def quantise_pcm16(mono) -> np.ndarray:
    """(L,) float -> the int16 samples libsndfile stores for 16-bit FLAC: round(x * 32768) clipped to
    [-32768, 32767] (its FLAC writer scales by 2^15, unlike its WAV writer's 32767; a test checks it)."""
    scaled = np.rint(np.asarray(mono, dtype=np.float32) * np.float32(32768.0))  # exact: a power of 2
    return np.clip(scaled, -32768, 32767).astype("<i2")


def encode_row(row: dict, codec: str = "flac") -> dict:
    """Decode, downmix, resample, encode and fingerprint one manifest row.

    Returns:
        `{"key", "audio", "ext", "data", "meta", "seconds", "pcm_sha1"}` on success,
        `{"key", "audio", "reason"}` on failure.
    """
    try:
        if not Path(row["audio"]).is_file():
            raise ValueError("missing file")
        wave, sample_rate = decode_audio(row["audio"])
        mono = to_mono_48k(wave, sample_rate)  # (L,)
        if mono.numel() == 0 or float(mono.abs().max()) == 0.0:
            raise ValueError("silent audio: all samples are zero")
        if codec == "flac":
            data = encode_flac(mono, TARGET_SAMPLE_RATE)
            pcm, _ = sf.read(io.BytesIO(data), dtype="int16")  # (L,) what the shard holds
        else:
            pcm = quantise_pcm16(mono.numpy())
            data = encode_pcm16(pcm, TARGET_SAMPLE_RATE)
    except Exception as error:  # noqa: BLE001 - any decoder failure skips the row, never the run
        return {"key": row["key"], "audio": row["audio"], "reason": str(error) or type(error).__name__}
    original = dict(row["original_data"])
    original.update(sample_rate=sample_rate, channels=int(wave.shape[0]))
    meta = {"text": row["text"] or [template_caption(row["tags"])]}
    if row["tags"]:
        meta["tags"] = row["tags"]
    meta["original_data"] = original
    return {"key": row["key"], "audio": row["audio"], "ext": codec, "data": data, "meta": meta,
            "seconds": mono.numel() / TARGET_SAMPLE_RATE, "pcm_sha1": pcm16_hash(pcm)}
