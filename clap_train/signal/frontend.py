"""Waveform -> log-mel front end, batched, on whatever device the waveform is on.

One configuration serves the model (unfused path: the log-mel of a waveform batch on the training
device) and the data workers (fusion path: `clap_train.signal.fusion` rebuilds the model's front end
from `LogMelFrontend.config()`), so the two cannot drift apart.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clap_train.signal.audio_ops import int16_to_float

CPU_FRAMES_PER_BLOCK = 256  # 256 x 1024 float32 frames = 1 MiB: the FFT working set fits in L2
MEL_BANDS = 4  # filter bands projected separately: about 1/3 of the multiply-adds of one dense projection


def hz_to_mel(freq: torch.Tensor, mel_scale: str) -> torch.Tensor:
    """HTK: 2595 log10(1 + f/700). Slaney (librosa default): f / (200/3) below 1 kHz, log-spaced above."""
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    log_step = math.log(6.4) / 27.0
    return torch.where(freq < 1000.0, freq * 3.0 / 200.0, 15.0 + torch.log(freq / 1000.0) / log_step)


def mel_to_hz(mel: torch.Tensor, mel_scale: str) -> torch.Tensor:
    """Inverse of `hz_to_mel`."""
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    log_step = math.log(6.4) / 27.0
    return torch.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * torch.exp(log_step * (mel - 15.0)))


def mel_filter_bank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int, mel_scale: str, norm: str | None
) -> torch.Tensor:
    """(n_freqs, n_mels) triangular filters between n_mels + 2 mel-spaced edges, built in float64
    (as HF's feature extractor and librosa do); `norm="slaney"` scales each to unit area 2 / (f_hi - f_lo)."""
    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)
    edges = torch.tensor([f_min, f_max], dtype=torch.float64)
    mel_lo, mel_hi = hz_to_mel(edges, mel_scale).tolist()
    f_pts = mel_to_hz(torch.linspace(mel_lo, mel_hi, n_mels + 2, dtype=torch.float64), mel_scale)
    widths = f_pts[1:] - f_pts[:-1]  # (n_mels + 1)
    slopes = f_pts[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    rising, falling = -slopes[:, :-2] / widths[:-1], slopes[:, 2:] / widths[1:]
    fbank = torch.minimum(rising, falling).clamp_min(0.0)
    if norm == "slaney":
        fbank = fbank * (2.0 / (f_pts[2:] - f_pts[:-2]))[None, :]
    return fbank


class FixedPrecisionConstants(nn.Module):
    """A module whose constant buffers (window, filters) follow device moves but not dtype casts: after
    `model.to(torch.bfloat16)` (Lightning's bf16-true) they stay float32 (float64), rebuilt from master
    copies, since FFTs do not run in bf16 and a bf16 window would cost the log-mel its precision."""

    def register_constants(self, **constants: torch.Tensor) -> None:
        self._constants = constants  # master copies: plain attributes, which `.to()` leaves alone
        for name, value in constants.items():
            self.register_buffer(name, value.clone(), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name, value in self._constants.items():
            setattr(self, name, value.to(getattr(self, name).device))
        return self


class LogMelFrontend(FixedPrecisionConstants):
    """Power mel spectrogram in dB, the CLAP recipe: periodic Hann, centred reflect-padded STFT,
    10*log10(max(mel, 1e-10)) with no top_db.

    Args:
        sample_rate, n_fft, hop_length, n_mels, f_min, f_max: STFT and filter-bank geometry
            (CLAP: 48000, 1024, 480, 64, 50, 14000).
        mel_scale: "slaney" with `norm="slaney"` for unfused checkpoints (librosa default),
            "htk" with `norm=None` for fused ones (torchaudio default).
        double_precision: run the STFT and mel projection in float64 (HF's numpy reference does): about
            2e-6 dB from HF instead of about 2e-4 dB in the quietest bins. Output stays float32.
    Forward: waveform (B, L) -> (B, 1, L // hop_length + 1, n_mels); an int16 waveform holds LAION's
    quantised samples q and is read as q / 32767 (`audio_ops.int16_quantise`).
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
        double_precision: bool = False,
    ):
        super().__init__()
        if mel_scale not in ("slaney", "htk"):
            raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {mel_scale!r}")
        if norm not in ("slaney", None):
            raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}")
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.f_min, self.f_max, self.mel_scale, self.norm = f_min, f_max, mel_scale, norm
        self.double_precision = double_precision
        dtype = torch.float64 if double_precision else torch.float32
        fbank = mel_filter_bank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, mel_scale, norm)
        # The mel projection only touches the FFT bins some filter covers (50 Hz .. 14 kHz: 2 .. 298 of 513),
        # and each band of filters only its own bins: (first_bin, end_bin, first_mel, end_mel) per band.
        self.first_bin, self.end_bin = _nonzero_rows(fbank)
        self.bands = []
        num_bands = min(MEL_BANDS, n_mels)
        for band in range(num_bands):
            first_mel, end_mel = band * n_mels // num_bands, (band + 1) * n_mels // num_bands
            self.bands.append((*_nonzero_rows(fbank[:, first_mel:end_mel]), first_mel, end_mel))
        # dtype-cast-proof buffers: FixedPrecisionConstants
        self.register_constants(mel_fbank=fbank.to(dtype),  # (n_fft/2+1, n_mels)
                                window=torch.hann_window(n_fft, periodic=True, dtype=dtype))

    def config(self) -> dict:
        """The constructor arguments (plain values): `LogMelFrontend(**frontend.config())` is an equal front end."""
        return {"sample_rate": self.sample_rate, "n_fft": self.n_fft, "hop_length": self.hop_length,
                "n_mels": self.n_mels, "f_min": self.f_min, "f_max": self.f_max, "mel_scale": self.mel_scale,
                "norm": self.norm, "double_precision": self.double_precision}

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Raises ValueError unless `waveform` is (B, L) with L > n_fft // 2 (reflect padding needs it)."""
        half = self.n_fft // 2
        if waveform.dim() != 2 or waveform.shape[1] <= half:
            raise ValueError(f"waveform must be (B, L) with L > {half}, got shape {tuple(waveform.shape)}")
        if waveform.dtype == torch.int16:
            waveform = int16_to_float(waveform)
        wave = waveform.to(self.window.dtype)
        with torch.autocast(wave.device.type, enabled=False):  # mixed precision: the projection stays float32
            mel = self._mel(wave)
        return (10.0 * torch.log10(mel.clamp_min(1e-10))).float().unsqueeze(1)  # (B, 1, T, n_mels)

    def _mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, T, n_mels) mel power."""
        if wave.device.type != "cpu":
            return self._mel_power(self._frames(wave))
        # one clip, and blocks of frames whose spectra stay in cache: 2-5x faster per clip on one core
        num_clips, num_frames = wave.shape[0], self.num_frames(wave.shape[1])
        mel = wave.new_empty(num_clips, num_frames, self.n_mels)
        for clip in range(num_clips):
            frames = self._frames(wave[clip:clip + 1])[0]  # (T, n_fft)
            for first in range(0, num_frames, CPU_FRAMES_PER_BLOCK):
                block = slice(first, first + CPU_FRAMES_PER_BLOCK)
                mel[clip, block] = self._mel_power(frames[block])
        return mel

    def _frames(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L // hop + 1, n_fft) strided view of the centred, reflect-padded waveform
        (as torch.stft(center=True, pad_mode="reflect")); only the padded copy is allocated."""
        half = self.n_fft // 2
        padded = torch.cat([wave[:, 1:half + 1].flip(-1), wave, wave[:, -half - 1:-1].flip(-1)], dim=1)
        return padded.unfold(1, self.n_fft, self.hop_length)

    def _mel_power(self, frames: torch.Tensor) -> torch.Tensor:
        """(..., frames, n_fft) -> (..., frames, n_mels) mel power; only the bins the filters use."""
        spec = torch.fft.rfft(frames * self.window, dim=-1)[..., self.first_bin:self.end_bin]  # (..., frames, bins)
        real_imag = torch.view_as_real(spec)  # (..., frames, bins, 2)
        power = real_imag[..., 0].square().add_(real_imag[..., 1].square())
        return torch.cat([
            power[..., first_bin - self.first_bin:end_bin - self.first_bin]
            @ self.mel_fbank[first_bin:end_bin, first_mel:end_mel]
            for first_bin, end_bin, first_mel, end_mel in self.bands
        ], dim=-1)  # (..., frames, n_mels)


def _nonzero_rows(matrix: torch.Tensor) -> tuple[int, int]:
    """(first, end) of the rows of `matrix` holding a positive entry; (0, 0) if none does."""
    rows = matrix.gt(0).any(dim=1).nonzero()[:, 0]
    return (int(rows.min()), int(rows.max()) + 1) if rows.numel() else (0, 0)
