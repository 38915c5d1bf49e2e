"""CLAP: audio and text towers, projection heads, two logit scales."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clap_train.models.heads import ProjectionHead
from clap_train.signal.frontend import LogMelFrontend


class CLAPModel(nn.Module):
    """Single-device CLAP model; distribution is applied from outside.

    Args:
        audio_encoder: (B, C, T, F) log-mel [+ is_longer] -> (B, audio_encoder.output_dim).
        text_encoder: (input_ids, attention_mask) -> (B, text_encoder.output_dim).
        frontend: waveform (B, L) -> (B, 1, T, F) log-mel, used for the unfused path.
        embed_dim: joint embedding width (512 in the released models).
        logit_scale_init: initial scale (exp of the stored parameter), 1/0.07.
        clip_samples: the audio window the model sees (training crops and `clap_train.inference.embed_audio`
            crop / pad to it); None = 10 s at the front-end rate.
    The logit scales are 1-element parameters holding ln(scale) so FSDP can shard them. The model reads no
    files: weights come from `clap_train.checkpoints`, raw-input embedding from `clap_train.inference`.
    """

    def __init__(
        self,
        audio_encoder: nn.Module,
        text_encoder: nn.Module,
        frontend: LogMelFrontend,
        embed_dim: int = 512,
        logit_scale_init: float = 1 / 0.07,
        clip_samples: int | None = None,
    ):
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if logit_scale_init <= 0:
            raise ValueError(f"logit_scale_init must be > 0, got {logit_scale_init}")
        self.frontend = frontend
        self.audio_encoder = audio_encoder
        self.text_encoder = text_encoder
        self.audio_projection = ProjectionHead(audio_encoder.output_dim, embed_dim)
        self.text_projection = ProjectionHead(text_encoder.output_dim, embed_dim)
        self.logit_scale_a = nn.Parameter(torch.full((1,), math.log(logit_scale_init)))
        self.logit_scale_t = nn.Parameter(torch.full((1,), math.log(logit_scale_init)))
        self.embed_dim = embed_dim
        if clip_samples is not None and clip_samples < 1:
            raise ValueError(f"clip_samples must be >= 1, got {clip_samples}")
        self.clip_samples = clip_samples if clip_samples is not None else 10 * frontend.sample_rate

    def encode_audio(self, features: torch.Tensor, is_longer: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel (B, C, T, F) -> unit-norm (B, embed_dim)."""
        return F.normalize(self.audio_projection(self.audio_encoder(features, is_longer)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> unit-norm (B, embed_dim)."""
        return F.normalize(self.text_projection(self.text_encoder(input_ids, attention_mask)), dim=-1)

    def audio_features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The audio tower's input from a batch: precomputed `features`, else the log-mel of `waveform`
        (computed in float32, then cast to the tower's parameter dtype: bf16 for a bf16-true model)."""
        if "features" in batch:
            return batch["features"], batch.get("is_longer")
        features = self.frontend(batch["waveform"])
        return features.to(next(self.audio_encoder.parameters()).dtype), batch.get("is_longer")

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Embeds a batch (keys in docs/ARCHITECTURE.md) -> {'audio_embeds', 'text_embeds'}."""
        features, is_longer = self.audio_features(batch)
        return {
            "audio_embeds": self.encode_audio(features, is_longer),
            "text_embeds": self.encode_text(batch["input_ids"], batch["attention_mask"]),
        }

    @torch.no_grad()
    def clamp_logit_scales(self, max_scale: float = 100.0) -> None:
        """LAION clamps ln(scale) to [0, ln 100] after every optimizer step."""
        for p in (self.logit_scale_a, self.logit_scale_t):
            p.clamp_(0, math.log(max_scale))
