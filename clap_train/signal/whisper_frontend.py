"""Whisper's log-mel front end (`WhisperFrontend`), equal to transformers' `WhisperFeatureExtractor`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clap_train.signal.audio_ops import int16_to_float
from clap_train.signal.frontend import FixedPrecisionConstants, mel_filter_bank


class WhisperFrontend(FixedPrecisionConstants):
    """Waveform -> Whisper's normalised log10 mel: zero pad or trim to `num_samples`, periodic Hann STFT
    (centred, reflect padding; the last frame dropped), power, Slaney mel filters 0-8 kHz, log10 clamped at
    1e-10, floored at the clip's maximum - 8 (80 dB below its peak), then (x + 4) / 4.

    Args:
        sample_rate: 16000 (Whisper's).
        n_fft, hop_length: 400 and 160 (25 ms windows, 10 ms hop: 100 frames per second).
        n_mels: 80 (tiny ... large-v2) or 128 (large-v3).
        num_samples: the window the tower sees (30 s = 480000 in every released Whisper; the encoder's
            `max_source_positions` must be num_samples / hop_length / 2).
        double_precision: STFT and mel projection in float64 (output float32).
    Forward: waveform (B, L) float or int16 (q / 32767) -> (B, 1, num_samples // hop_length, n_mels).
    One unit of the output is 40 dB (10 log10 of the mel power = 40 x - 40).

    Raises:
        ValueError: bad geometry, or a waveform that is not (B, L).
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160, n_mels: int = 80,
                 num_samples: int = 480000, double_precision: bool = False):
        super().__init__()
        for name, value in (("sample_rate", sample_rate), ("n_fft", n_fft), ("hop_length", hop_length),
                            ("n_mels", n_mels), ("num_samples", num_samples)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_samples <= n_fft // 2:
            raise ValueError(f"num_samples ({num_samples}) must exceed n_fft // 2 ({n_fft // 2}) for reflect padding")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.num_samples, self.double_precision = num_samples, double_precision
        dtype = torch.float64 if double_precision else torch.float32
        fbank = mel_filter_bank(n_fft // 2 + 1, 0.0, 8000.0, n_mels, sample_rate, "slaney", "slaney")
        # master copies kept out of dtype casts (bf16-true), as LogMelFrontend does
        self.register_constants(mel_fbank=fbank.T.to(dtype).contiguous(),  # (n_mels, n_fft/2+1)
                                window=torch.hann_window(n_fft, periodic=True, dtype=dtype))

    def config(self) -> dict:
        """The constructor arguments (plain values): `WhisperFrontend(**frontend.config())` is an equal front end."""
        return {"sample_rate": self.sample_rate, "n_fft": self.n_fft, "hop_length": self.hop_length,
                "n_mels": self.n_mels, "num_samples": self.num_samples, "double_precision": self.double_precision}

    @property
    def num_frames(self) -> int:
        return self.num_samples // self.hop_length

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"waveform must be (B, L), got shape {tuple(waveform.shape)}")
        if waveform.dtype == torch.int16:
            waveform = int16_to_float(waveform)
        wave = waveform.to(self.window.dtype)
        if wave.shape[1] != self.num_samples:  # Whisper pads every clip with zeros to its 30 s window
            wave = F.pad(wave, (0, self.num_samples - wave.shape[1])) if wave.shape[1] < self.num_samples \
                else wave[:, :self.num_samples]
        with torch.autocast(wave.device.type, enabled=False):
            stft = torch.stft(wave, self.n_fft, self.hop_length, window=self.window, center=True,
                              pad_mode="reflect", return_complex=True)  # (B, n_fft/2+1, T + 1)
            power = stft[..., :-1].abs().square()  # (B, bins, T)
            log_mel = (self.mel_fbank @ power).clamp_min(1e-10).log10()  # (B, n_mels, T)
        peak = log_mel.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        log_mel = (torch.maximum(log_mel, peak - 8.0) + 4.0) / 4.0
        return log_mel.transpose(1, 2).unsqueeze(1).float()  # (B, 1, T, n_mels)
