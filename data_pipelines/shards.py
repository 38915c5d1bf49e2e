"""Audio codecs of the offline tools, and (re-exported) the shard format of `clap_train.data.shard_format`.

The shard layout, key rules, sizes.json and the tar writer/reader live in the library
(`clap_train/data/shard_format.py`); data_pipelines imports them from there, never the reverse.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from clap_train.data.shard_format import (  # noqa: F401  (the tools' one import of the format)
    AUDIO_MEMBERS,
    SIZES_FILE,
    TARGET_SAMPLE_RATE,
    ShardWriter,
    check_key,
    encode_flac,
    encode_meta,
    expand_shards,
    is_remote,
    iter_tar,
    read_meta,
    read_sizes,
    shard_name,
    tar_keys,
    update_sizes,
    write_shards,
    write_tar,
)

# ---------------------------------------------------------------------------------- audio codecs


DECODE_EXTRA = "pip install 'clap_train[decode]'"


def decode_audio(source: str | Path | bytes) -> tuple[torch.Tensor, int]:
    """Decode an audio file (path or bytes) to a float32 tensor (C, L) in [-1, 1] and its rate.

    Chosen per file: soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...) first; what
    it cannot read (m4a/aac, opus or vorbis in mp4/webm, ...) goes to PyAV (the `decode` extra) when
    installed, else to an `ffmpeg` binary on PATH.
    Raises:
        ValueError when the audio cannot be decoded (naming the `decode` extra when neither PyAV
        nor ffmpeg is there) or holds no samples.
    """
    try:
        data, sample_rate = sf.read(
            io.BytesIO(source) if isinstance(source, bytes) else str(source), dtype="float32", always_2d=True
        )
    except Exception as error:  # libsndfile raises several types (LibsndfileError, RuntimeError, TypeError)
        if importlib.util.find_spec("av") is not None:
            data, sample_rate = _decode_with_pyav(source)
        elif shutil.which("ffmpeg") is not None:
            data, sample_rate = _decode_with_ffmpeg(source)
        else:
            raise ValueError(f"undecodable audio: {error}; formats libsndfile cannot read (m4a, aac, opus in "
                             f"mp4/webm) need the decode extra: {DECODE_EXTRA}") from error
    if data.shape[0] == 0:
        raise ValueError("empty audio: 0 samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, L)
    if not torch.isfinite(wave).all():
        raise ValueError("audio holds NaN or inf samples")
    return wave, int(sample_rate)


def _decode_with_pyav(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """PyAV (FFmpeg's decoders, in-process) -> float32 (L, C) at the stream's own rate."""
    import av

    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
            chunks = [out.to_ndarray() for frame in container.decode(stream) for out in resampler.resample(frame)]
            chunks += [out.to_ndarray() for out in resampler.resample(None)]  # flush
            rate = stream.rate
    except (av.FFmpegError, IndexError, ValueError) as error:
        raise ValueError(f"undecodable audio: PyAV: {error}") from error
    channels = chunks[0].shape[0] if chunks else 1
    return np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, channels), np.float32), rate


def _decode_with_ffmpeg(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """ffmpeg -> 48 kHz float32 WAV on stdout, read back with soundfile. Returns (L, C), rate."""
    is_bytes = isinstance(source, bytes)
    command = ["ffmpeg", "-v", "error", "-i", "pipe:0" if is_bytes else str(source)]
    command += ["-ar", str(TARGET_SAMPLE_RATE), "-f", "wav", "-acodec", "pcm_f32le", "pipe:1"]
    result = subprocess.run(command, check=False, input=source if is_bytes else None, capture_output=True, timeout=600)
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ValueError(f"undecodable audio: ffmpeg: {message[-1] if message else 'no output'}")
    data, sample_rate = sf.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    return data, sample_rate


def to_mono_48k(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Average channels and resample: (C, L) or (L,) at `sample_rate` -> (L',) float32 at 48 kHz."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate: must be positive, got {sample_rate}")
    wave = torch.as_tensor(wave, dtype=torch.float32)
    if wave.dim() == 2:
        wave = wave.mean(dim=0)  # (L,)
    elif wave.dim() != 1:
        raise ValueError(f"wave: expected (C, L) or (L,), got shape {tuple(wave.shape)}")
    if sample_rate != TARGET_SAMPLE_RATE:
        wave = AF.resample(wave, sample_rate, TARGET_SAMPLE_RATE)
    return wave


def audio_duration(audio_bytes: bytes) -> float:
    """Duration in seconds read from an encoded file's header (no full decode)."""
    info = sf.info(io.BytesIO(audio_bytes))
    return info.frames / info.samplerate
