"""Waveform -> log-mel front end, batched, on whatever device the waveform is on."""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn


class LogMelFrontend(nn.Module):
    """Power mel spectrogram in dB, the CLAP recipe: periodic Hann, centred reflect-padded STFT,
    10*log10(max(mel, 1e-10)) with no top_db.

    Args:
        sample_rate, n_fft, hop_length, n_mels, f_min, f_max: STFT and filter-bank geometry
            (CLAP: 48000, 1024, 480, 64, 50, 14000).
        mel_scale: "slaney" with `norm="slaney"` for unfused checkpoints (librosa default),
            "htk" with `norm=None` for fused ones (torchaudio default).
    Forward: waveform (B, L) -> (B, 1, L // hop_length + 1, n_mels).
    """

    def __init__(
        self,
        sample_rate: int = 48000,
        n_fft: int = 1024,
        hop_length: int = 480,
        n_mels: int = 64,
        f_min: float = 50.0,
        f_max: float = 14000.0,
        mel_scale: str = "slaney",
        norm: str | None = "slaney",
    ):
        super().__init__()
        if mel_scale not in ("slaney", "htk"):
            raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {mel_scale!r}")
        if norm not in ("slaney", None):
            raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        fbank = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm=norm, mel_scale=mel_scale)
        self.register_buffer("mel_fbank", fbank.float(), persistent=False)  # (n_fft/2+1, n_mels)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            waveform.float(), self.n_fft, self.hop_length, window=self.window,
            center=True, pad_mode="reflect", return_complex=True,
        )  # (B, n_fft/2+1, T)
        power = spec.real.square() + spec.imag.square()
        mel = power.transpose(1, 2) @ self.mel_fbank  # (B, T, n_mels)
        return (10.0 * torch.log10(mel.clamp_min(1e-10))).unsqueeze(1)  # (B, 1, T, n_mels)
