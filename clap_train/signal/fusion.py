"""4-channel "fusion" log-mel features for the fused CLAP model (CLAP_SPEC §2.4), built in data workers.

A clip longer than the window yields [global, front, middle, back]: the whole clip's log-mel squeezed
to the window's frame count, and three window-long crops whose starts are drawn from the front,
middle and back thirds of the possible starts. Shorter clips are padded and repeated 4 times.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clap_train.signal.audio_ops import as_mono_tensor, pad_to_length


def fusion_crop_ranges(total_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Inclusive (first, last) crop-start ranges for the front / middle / back crops.

    The starts 0 .. total_frames - chunk_frames are split into 3 contiguous parts the way
    `np.array_split` does (the first (n mod 3) parts get one extra start); an empty middle or back
    part becomes (0, 0), as in LAION / HF.

    Raises:
        ValueError: if total_frames <= chunk_frames (no room for distinct crops).
    """
    if total_frames <= chunk_frames:
        raise ValueError(f"total_frames ({total_frames}) must exceed chunk_frames ({chunk_frames})")
    num_starts = total_frames - chunk_frames + 1
    base, extra = divmod(num_starts, 3)
    ranges, first = [], 0
    for part in range(3):
        size = base + (part < extra)
        ranges.append((first, first + size - 1) if size else (0, 0))
        first += size
    return ranges


def build_fusion_features(
    wave: np.ndarray | torch.Tensor,
    frontend: nn.Module,
    clip_samples: int = 480000,
    padding: str = "repeatpad",
    rng: np.random.Generator | None = None,
    crop_starts: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, bool]:
    """Fusion features of one mono clip.

    Args:
        wave: (L,) waveform at the frontend's rate.
        frontend: a `LogMelFrontend` (HTK scale, no filter norm for the released fused models);
            must expose `hop_length` and map (1, L) -> (1, 1, frames, n_mels).
        clip_samples: window length in samples (480000).
        padding: how clips of L <= clip_samples are lengthened (`audio_ops.pad_to_length`).
        rng: NumPy Generator drawing each crop start uniformly from its `fusion_crop_ranges` part
            (a fresh unseeded one if None). Ignored when `crop_starts` is given.
        crop_starts: explicit (front, middle, back) start frames, for reproducible tests.
    Returns:
        features (4, clip_samples // hop + 1, n_mels) float32 and is_longer. is_longer is False for
        padded clips and for clips only up to one hop too long (one frame count; 4 copies then).
    Raises:
        ValueError: bad `padding`, a non-1-D `wave`, or `crop_starts` outside [0, frames - chunk].
    """
    tensor = as_mono_tensor(wave)
    chunk_frames = clip_samples // frontend.hop_length + 1
    if tensor.shape[0] <= clip_samples:
        mel = _log_mel(frontend, pad_to_length(tensor, clip_samples, padding))
        return mel.expand(4, -1, -1).clone(), False
    mel = _log_mel(frontend, tensor)  # (total_frames, n_mels)
    total_frames, num_bins = mel.shape
    if total_frames == chunk_frames:
        return mel.expand(4, -1, -1).clone(), False
    if crop_starts is None:
        rng = rng if rng is not None else np.random.default_rng()
        crop_starts = tuple(int(rng.integers(first, last + 1)) for first, last in fusion_crop_ranges(
            total_frames, chunk_frames))
    if len(crop_starts) != 3 or not all(0 <= s <= total_frames - chunk_frames for s in crop_starts):
        raise ValueError(f"crop_starts must be 3 starts in [0, {total_frames - chunk_frames}], got {crop_starts}")
    crops = [mel[start:start + chunk_frames] for start in crop_starts]
    # Global view: bilinear, align_corners=False, no antialiasing (what LAION trained with and HF does).
    squeezed = F.interpolate(mel[None, None], size=(chunk_frames, num_bins), mode="bilinear", align_corners=False)
    return torch.stack([squeezed[0, 0], *crops]), True  # (4, chunk_frames, n_mels)


def _log_mel(frontend: nn.Module, wave: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return frontend(wave[None])[0, 0]  # (frames, n_mels)
