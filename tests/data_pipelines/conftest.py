"""Audio fixtures for the offline tools: short sine waves in several formats, rates and layouts."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # subprocesses run this worktree's code


def sine(seconds: float, sample_rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """(L, C) float32 sine at half amplitude; channel c is phase-shifted so stereo is not mono."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    columns = [0.5 * np.sin(2 * np.pi * freq * t + c) for c in range(channels)]
    return np.stack(columns, axis=1).astype(np.float32)


def write_audio(path: Path, seconds: float = 1.0, sample_rate: int = 16000, channels: int = 1, **kwargs) -> Path:
    """A sine whose pitch depends on the file name, so that fixture clips are not exact duplicates
    (make_shards drops those)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    freq = 300.0 + zlib.crc32(path.name.encode()) % 500
    sf.write(str(path), sine(seconds, sample_rate, channels, freq), sample_rate, **kwargs)
    return path


def write_broken(directory: Path) -> dict[str, Path]:
    """A corrupt .flac (random bytes), a truncated flac and an empty wav."""
    directory.mkdir(parents=True, exist_ok=True)
    corrupt = directory / "corrupt.flac"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    full = write_audio(directory / "full.flac", 1.0, 16000)
    truncated = directory / "truncated.flac"
    truncated.write_bytes(full.read_bytes()[:60])
    full.unlink()
    empty = directory / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1), dtype=np.float32), 16000)
    return {"corrupt": corrupt, "truncated": truncated, "empty": empty}
