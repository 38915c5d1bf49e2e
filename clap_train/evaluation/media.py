"""Dependency-free media encoders for the evaluation report: PNG, 16-bit WAV, spectrogram images."""

from __future__ import annotations

import io
import struct
import wave
import zlib

import numpy as np

# anchor colours of a perceptually ordered dark-blue -> green -> yellow map (viridis-like)
_COLORMAP_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit image: (H, W) grey or (H, W, 3) RGB, uint8.

    Raises:
        ValueError: on another dtype or shape.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"image must be uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    color_type = 0 if image.ndim == 2 else 2
    rows = image.reshape(height, -1)  # (H, W * channels)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1)  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def encode_wav(waveform: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV bytes of a float waveform (L,) in [-1, 1] (clipped beyond)."""
    samples = np.clip(np.asarray(waveform, dtype=np.float64).reshape(-1), -1.0, 1.0)
    pcm = np.round(samples * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def apply_colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (H, W) to RGB uint8 (H, W, 3)."""
    position = np.clip(values, 0.0, 1.0) * (len(_COLORMAP_ANCHORS) - 1)
    low = np.minimum(np.floor(position).astype(int), len(_COLORMAP_ANCHORS) - 2)
    frac = (position - low)[..., None]
    rgb = _COLORMAP_ANCHORS[low] * (1 - frac) + _COLORMAP_ANCHORS[low + 1] * frac
    return np.round(rgb).astype(np.uint8)


def spectrogram_image(
    waveform: np.ndarray,
    sample_rate: int,
    height: int = 96,
    max_width: int = 400,
    n_fft: int = 1024,
    top_db: float = 80.0,
) -> np.ndarray:
    """A log-frequency, dB-scaled magnitude spectrogram as an RGB image (height, <= max_width, 3).

    Frequencies from 20 Hz to Nyquist on a log axis, low frequencies at the bottom; the `top_db`
    range below the loudest bin is mapped through the colormap; time is max-pooled to `max_width`.
    """
    samples = np.asarray(waveform, dtype=np.float64).reshape(-1)
    hop = n_fft // 4
    if len(samples) < n_fft:
        samples = np.pad(samples, (0, n_fft - len(samples)))
    num_frames = 1 + (len(samples) - n_fft) // hop
    frame_starts = np.arange(num_frames)[:, None] * hop
    frames = samples[frame_starts + np.arange(n_fft)[None, :]] * np.hanning(n_fft)  # (T, n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, n_fft // 2 + 1)
    db = 10 * np.log10(np.maximum(power, 1e-10))
    bin_hz = sample_rate / n_fft
    row_hz = np.geomspace(20.0, sample_rate / 2, height)
    rows = np.clip(np.round(row_hz / bin_hz).astype(int), 0, power.shape[1] - 1)
    image = db[:, rows].T[::-1]  # (height, T), high frequencies on top
    if image.shape[1] > max_width:
        pool = int(np.ceil(image.shape[1] / max_width))
        pad = (-image.shape[1]) % pool
        image = np.pad(image, ((0, 0), (0, pad)), constant_values=image.min())
        image = image.reshape(height, -1, pool).max(axis=2)  # (height, T / pool)
    peak = image.max()
    return apply_colormap((image - (peak - top_db)) / top_db)
