"""Pure waveform crop/pad helpers (LAION-CLAP's truncation and padding modes)."""

from __future__ import annotations

import numpy as np

TRUNCATIONS = ("rand_trunc", "fusion")
PADDINGS = ("repeatpad", "repeat", "pad")


def crop_or_pad(
    wave: np.ndarray, clip_samples: int, truncation: str = "rand_trunc", padding: str = "repeatpad",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, bool]:
    """Bring a 1-D waveform to exactly `clip_samples` samples.

    Longer clips are cropped at a uniform random start (`rand_trunc`); shorter ones are padded:
    `repeatpad` tiles floor(clip/L) copies then zero-pads, `repeat` tiles and cuts, `pad` zero-pads.
    Returns (wave (clip_samples,) float32, is_longer).
    Raises ValueError on an empty waveform or an unknown mode.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    length = len(wave)
    if length == 0:
        raise ValueError("empty waveform")
    if length > clip_samples:
        rng = rng or np.random.default_rng()
        start = int(rng.integers(0, length - clip_samples + 1))
        return wave[start:start + clip_samples].astype(np.float32), True
    if length < clip_samples:
        if padding == "repeatpad":
            wave = np.tile(wave, clip_samples // length)
        elif padding == "repeat":
            wave = np.tile(wave, clip_samples // length + 1)[:clip_samples]
        wave = np.pad(wave, (0, clip_samples - len(wave)))
    return wave.astype(np.float32), False


def int16_round_trip(wave: np.ndarray) -> np.ndarray:
    """LAION quantises every training waveform: clip to [-1, 1], *32767, truncate to int16, /32767."""
    return (np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0
