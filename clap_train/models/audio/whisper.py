"""Whisper's audio encoder (Radford et al. 2022) as a CLAP audio tower (`WhisperEncoder`).

Parameter names are transformers' `WhisperEncoder` names, so its state dict (under `encoder.` /
`model.encoder.` in a Whisper checkpoint) loads after stripping the prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """(length, channels) Whisper's fixed positions: [sin | cos] of geometric timescales 1 .. max_timescale."""
    log_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]  # (length, channels / 2)
    return torch.cat([scaled_time.sin(), scaled_time.cos()], dim=1)


class Positions(nn.Module):
    """Holds the (max_source_positions, d_model) position table as buffer `weight` (HF's frozen Embedding)."""

    def __init__(self, length: int, channels: int):
        super().__init__()
        self.register_buffer("weight", sinusoids(length, channels))


class WhisperAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)  # Whisper's key projection has no bias
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, P, C = x.shape
        q, k, v = (proj(x).view(B, P, self.num_heads, -1).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, P, C/H)
        ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(ctx.transpose(1, 2).reshape(B, P, C))


class WhisperEncoderLayer(nn.Module):
    """Pre-LN transformer layer: x + attn(LN(x)), then x + fc2(gelu(fc1(LN(x)))). (B, P, C) -> (B, P, C)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.self_attn = WhisperAttention(d_model, num_heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x)))
        return x + self.dropout(self.fc2(F.gelu(self.fc1(self.final_layer_norm(x)))))


class WhisperEncoder(nn.Module):
    """Whisper encoder, mean-pooled over the tokens that hold audio -> (B, d_model).

    Defaults are whisper-base. Input: `signal.whisper_frontend.WhisperFrontend` log-mels
    (B, 1, 2 * max_source_positions, num_mel_bins)
    (30 s = 3000 frames for the released models); two convolutions (the second with stride 2) give one token
    per 2 frames, plus fixed sinusoidal positions, then pre-LN layers and a final LayerNorm, exactly as
    transformers' `WhisperEncoder` (`last_hidden_state`).

    Pooling: the clip's audio ends at its last frame with any mel bin above the clip's floor value (the
    front end floors every bin at peak - 80 dB, which is where zero padding and digital silence sit), and
    the output is the mean of the tokens up to that frame (at least one). Short clips padded with zeros to
    the 30 s window (`data.padding=pad`) are thus pooled over their own length only; nothing is cropped
    up to 30 s.

    Args:
        num_mel_bins: 80, or 128 (large-v3). d_model, num_layers, num_heads, ffn_dim: geometry.
        max_source_positions: tokens per window (1500 = 30 s).
        dropout, attention_dropout: training only (Whisper trained with 0).
    Initialise from a transformers Whisper directory with `init.audio_encoder=DIR`
    (`clap_train.checkpoints.pretrained.load_pretrained_whisper`).
    `is_longer` is accepted for the audio-tower signature and ignored.

    Raises:
        ValueError: bad geometry; at forward, input of the wrong shape.
    """

    def __init__(self, num_mel_bins: int = 80, d_model: int = 512, num_layers: int = 6, num_heads: int = 8,
                 ffn_dim: int = 2048, max_source_positions: int = 1500, dropout: float = 0.0,
                 attention_dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads or d_model % 2:
            raise ValueError(f"d_model ({d_model}) must be even and divisible by num_heads ({num_heads})")
        for name, value in (("num_mel_bins", num_mel_bins), ("num_layers", num_layers),
                            ("max_source_positions", max_source_positions)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.num_mel_bins, self.d_model, self.max_source_positions = num_mel_bins, d_model, max_source_positions
        self.output_dim = d_model
        self.conv1 = nn.Conv1d(num_mel_bins, d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = Positions(max_source_positions, d_model)
        self.layers = nn.ModuleList(WhisperEncoderLayer(d_model, num_heads, ffn_dim, dropout, attention_dropout)
                                    for _ in range(num_layers))
        self.layer_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def hidden_states(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, F) log-mel -> (B, T / 2, d_model), transformers' `last_hidden_state`."""
        num_frames = 2 * self.max_source_positions
        if features.dim() != 4 or features.shape[1] != 1 or features.shape[2:] != (num_frames, self.num_mel_bins):
            raise ValueError(f"WhisperEncoder expects (B, 1, {num_frames}, {self.num_mel_bins}) log-mels "
                             f"(model.frontend.num_samples = {num_frames} hops), got {tuple(features.shape)}")
        x = features[:, 0].transpose(1, 2)  # (B, F, T)
        x = F.gelu(self.conv2(F.gelu(self.conv1(x)))).transpose(1, 2)  # (B, T / 2, C)
        x = self.dropout(x + self.embed_positions.weight.to(x.dtype))
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)

    def forward(self, features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.hidden_states(features)  # (B, P, C)
        mask = audio_token_mask(features, hidden.shape[1]).to(hidden.dtype)  # (B, P)
        return (hidden * mask[..., None]).sum(dim=1) / mask.sum(dim=1, keepdim=True)


def audio_token_mask(features: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(B, 1, T, F) log-mel -> (B, num_tokens) bool: the tokens up to the clip's last frame above its floor."""
    frames = features[:, 0]  # (B, T, F)
    floor = frames.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    holds_audio = (frames > floor).any(dim=2)  # (B, T)
    positions = torch.arange(frames.shape[1], device=frames.device)
    last = torch.where(holds_audio, positions, -1).amax(dim=1)  # (B,) last frame with audio, -1 if none
    num_valid = ((last + 2) // 2).clamp(min=1)  # tokens covering frames 0 .. last (2 frames per token)
    return torch.arange(num_tokens, device=frames.device)[None, :] < num_valid[:, None]
