"""Symmetric InfoNCE as trained in LAION-CLAP (`ClipLoss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clap_train.distributed.gather import all_gather_with_grad


class ClipLoss(nn.Module):
    """0.5 * [CE(audio->text) + CE(text->audio)] over features gathered from every rank.

    Args:
        gather_with_grad: gather features with a gradient-carrying all-gather (LAION default).
    Forward takes the local rank's unit-norm `audio_embeds`, `text_embeds` (B, D) and the raw
    (log) `logit_scale_a`; only `logit_scale_a` is used, as in the released checkpoints.
    """

    def __init__(self, gather_with_grad: bool = True):
        super().__init__()
        self.gather_with_grad = gather_with_grad

    def forward(self, audio_embeds, text_embeds, logit_scale_a, logit_scale_t=None) -> torch.Tensor:
        all_audio = all_gather_with_grad(audio_embeds)  # (N, D)
        all_text = all_gather_with_grad(text_embeds)
        logits_per_audio = logit_scale_a.exp() * all_audio @ all_text.T  # (N, N)
        labels = torch.arange(logits_per_audio.shape[0], device=logits_per_audio.device)
        return 0.5 * (F.cross_entropy(logits_per_audio, labels) + F.cross_entropy(logits_per_audio.T, labels))
