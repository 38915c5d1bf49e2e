"""Shard audio members read on demand: the header at once, then the whole clip or only a window.

Formats (member extension -> reader):
- `pcm16`: 4-byte little-endian sample rate, then little-endian int16 mono samples; nothing to
  decode (a view of the bytes; samples read as q / 32768, as libsndfile reads 16-bit FLAC).
- `flac`, `wav`: libsndfile, which seeks sample-exactly, so a window is decoded alone.
- `mp3`, `ogg`: libsndfile, whole clip only (their seeking is not sample-exact everywhere).
`data_pipelines.encode` writes `pcm16` members with `encode_pcm16`.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

SEEKABLE = ("pcm16", "flac", "wav")
_SCALE = np.float32(1.0 / 32768.0)  # exact: a power of two


def encode_pcm16(pcm: np.ndarray, sample_rate: int) -> bytes:
    """(L,) int16 samples -> a `pcm16` member: `<u4 rate>` + little-endian int16 samples."""
    return np.uint32(sample_rate).astype("<u4").tobytes() + np.ascontiguousarray(pcm, dtype="<i2").tobytes()


def decode_pcm16(data: bytes) -> tuple[np.ndarray, int]:
    """A `pcm16` member -> ((L,) int16 view of `data`, sample rate). Raises ValueError when malformed."""
    if len(data) < 6 or len(data) % 2:
        raise ValueError(f"pcm16: {len(data)} bytes is not a 4-byte rate plus int16 samples")
    rate = int(np.frombuffer(data, "<u4", count=1)[0])
    if rate < 1:
        raise ValueError("pcm16: sample rate 0")
    return np.frombuffer(data, "<i2", offset=4), rate


class ClipReader:
    """One encoded audio member: `rate`, `frames`, `channels` from its header; `read` decodes.

    Raises:
        ValueError (pcm16) or soundfile's errors (other formats) when the header is unreadable.
    """

    def __init__(self, data: bytes, ext: str):
        self.seekable = ext in SEEKABLE
        if ext == "pcm16":
            self._pcm, self.rate = decode_pcm16(data)
            self.frames, self.channels, self._file = self._pcm.shape[0], 1, None
        else:
            self._file = sf.SoundFile(io.BytesIO(data))
            self.rate, self.frames, self.channels = self._file.samplerate, self._file.frames, self._file.channels

    def read(self, start: int = 0, num_frames: int = -1) -> np.ndarray:
        """(n, C) float32 samples from `start` (all remaining when `num_frames` is -1)."""
        if self._file is None:
            stop = self.frames if num_frames < 0 else start + num_frames
            return (self._pcm[start:stop].astype(np.float32) * _SCALE)[:, None]
        if start:
            self._file.seek(start)
        return self._file.read(num_frames, dtype="float32", always_2d=True)
