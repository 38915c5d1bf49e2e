"""Pure waveform helpers for CLAP preprocessing (CLAP_SPEC §2.3, §2.5): crop / pad to a fixed window.

All functions take a mono 1-D waveform (numpy array or torch tensor) and leave it untouched; a result may
share memory with the input where no copy is needed (a crop is a view). Randomness comes only from the
`rng` argument.
"""

from __future__ import annotations

import numpy as np
import torch

TRUNCATIONS = ("rand_trunc", "head")
PADDINGS = ("repeatpad", "repeat", "pad")


def as_mono_tensor(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """1-D float32 tensor view/copy of `wave`. Raises ValueError if `wave` is not 1-D or is empty."""
    tensor = torch.as_tensor(wave, dtype=torch.float32)
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise ValueError(f"wave must be a non-empty 1-D mono waveform, got shape {tuple(tensor.shape)}")
    return tensor


def pad_to_length(wave: torch.Tensor, length: int, padding: str) -> torch.Tensor:
    """Lengthen a clip of L <= length samples to exactly `length` (CLAP_SPEC §2.3):
    "repeatpad": tile floor(length / L) times, then zero-pad on the right (LAION / HF default);
    "repeat": tile floor(length / L) + 1 times, cut to length; "pad": zero-pad on the right.

    Raises:
        ValueError: unknown `padding`, or the clip is longer than `length`.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    num_samples = wave.shape[0]
    if num_samples > length:
        raise ValueError(f"clip of {num_samples} samples is longer than {length}")
    if num_samples == length:
        return wave
    if padding == "repeat":
        wave = wave.repeat(length // num_samples + 1)[:length]
    elif padding == "repeatpad":
        wave = wave.repeat(length // num_samples)
    return torch.nn.functional.pad(wave, (0, length - wave.shape[0]))


def crop_or_pad(
    wave: np.ndarray | torch.Tensor,
    clip_samples: int,
    truncation: str = "rand_trunc",
    padding: str = "repeatpad",
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, bool]:
    """Fit a mono clip to exactly `clip_samples` samples, for the unfused model.

    Args:
        wave: (L,) waveform.
        clip_samples: window length (480000 = 10 s at 48 kHz).
        truncation: for L > clip_samples, "rand_trunc" takes a window at a start drawn uniformly from
            [0, L - clip_samples] with `rng.integers` (LAION / HF), "head" takes the first window
            (deterministic, for evaluation).
        padding: for L < clip_samples, see `pad_to_length`.
        rng: NumPy Generator for "rand_trunc" (a fresh unseeded one if None).
    Returns:
        (clip_samples,) float32 tensor (a view of `wave` unless padded) and `is_longer` (L > clip_samples).
    Raises:
        ValueError: unknown `truncation` / `padding`, non-positive `clip_samples`, or a non-1-D `wave`.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if clip_samples < 1:
        raise ValueError(f"clip_samples must be >= 1, got {clip_samples}")
    tensor = as_mono_tensor(wave)
    if tensor.shape[0] <= clip_samples:
        return pad_to_length(tensor, clip_samples, padding), False
    start = crop_start(tensor.shape[0], clip_samples, truncation, rng)
    return tensor[start:start + clip_samples], True


def crop_start(num_samples: int, clip_samples: int, truncation: str, rng: np.random.Generator | None = None) -> int:
    """Where `crop_or_pad` starts its window in a clip of `num_samples` > `clip_samples` (one draw of
    `rng` for "rand_trunc"): a loader that decodes only that window calls this with the same `rng`."""
    if truncation == "rand_trunc":
        return int((rng if rng is not None else np.random.default_rng()).integers(0, num_samples - clip_samples + 1))
    return 0


def int16_quantise(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """LAION's waveform quantisation (CLAP_SPEC §2.5), first half: clip to [-1, 1], scale by 32767,
    truncate toward zero -> int16 tensor q, standing for the waveform q / 32767 (`int16_to_float`).
    Data workers batch q: half the bytes of float32 through collation, worker IPC and host-to-device copy."""
    return as_mono_tensor(wave).clamp(-1.0, 1.0).mul_(32767.0).to(torch.int16)


def int16_to_float(quantised: torch.Tensor) -> torch.Tensor:
    """int16 q (any shape) -> float32 q / 32767, the second half of LAION's quantisation."""
    return quantised.to(torch.float32).div_(32767.0)


def int16_roundtrip(wave: np.ndarray | torch.Tensor) -> torch.Tensor:
    """LAION's quantisation as float32 (`int16_to_float(int16_quantise(wave))`). HF skips it; LAION applied
    it in training and in its inference hook."""
    return int16_to_float(int16_quantise(wave))
