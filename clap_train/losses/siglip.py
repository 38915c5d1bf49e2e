"""Pairwise sigmoid loss (SigLIP, Zhai et al. 2023) for audio-text pairs (`SigLipLoss`).

With N = world_size * B pairs, t = exp(logit_scale_a), b the learnable bias and z_ij = +1 for i == j
(a matching pair) and -1 otherwise, the loss of the global batch is the paper's

    L = -1/N * sum_{i,j} log sigmoid(z_ij * (t * a_i . t_j + b)).

Rank r owns audio rows i of its shard and scores them against the text of every rank, gathered with
gradient: (B, N) logits, positives at column r * B + i. It returns L_r = -1/B * sum_{i in r, j} (...), so
mean_r(L_r) = L, and, because each pair (i, j) is scored on exactly one rank and the gather's backward
sums over ranks, the gradient after DDP averages over ranks is exactly dL/dtheta of the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clap_train.distributed.gather import all_gather_with_grad, world_info
from clap_train.losses.contrastive import check_paired

RECOMMENDED_LOGIT_SCALE_INIT = math.log(10.0)
"""The paper's temperature init t' = log 10, i.e. exp(logit_scale_a) = 10 at the start of training."""


class SigLipLoss(nn.Module):
    """Sigmoid loss over every audio-text pair of the global batch, with a learnable logit bias.

    Args:
        bias_init: initial value of the 1-element `bias` parameter; -10 (the paper's) keeps the initial
            loss from being dominated by the N^2 - N negatives.

    Forward takes the local rank's unit-norm `audio_embeds`, `text_embeds` (B, D), the same B on every
    rank, and the raw (log) `logit_scale_a` (1 element; initialise it to RECOMMENDED_LOGIT_SCALE_INIT, not
    CLIP's log(1/0.07)). `logit_scale_t` is accepted for the common loss signature and not used.
    The text embeddings are all-gathered with gradient; the audio embeddings never leave the rank.

    Raises:
        ValueError: `bias_init` is not finite.
    """

    def __init__(self, bias_init: float = -10.0):
        super().__init__()
        if not math.isfinite(bias_init):
            raise ValueError(f"bias_init must be finite, got {bias_init}")
        self.bias = nn.Parameter(torch.full((1,), float(bias_init)))

    def forward(
        self,
        audio_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        logit_scale_a: torch.Tensor,
        logit_scale_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar L_r; its mean over ranks is the global-batch loss L (see the module docstring)."""
        check_paired(audio_embeds, text_embeds)
        rank, _ = world_info()
        num_local = audio_embeds.shape[0]
        all_text = all_gather_with_grad(text_embeds)  # (N, D)
        logits = logit_scale_a.exp() * audio_embeds @ all_text.T + self.bias  # (B, N)
        signs = -torch.ones_like(logits)  # (B, N): -1 for every negative pair
        rows = torch.arange(num_local, device=logits.device)
        signs[rows, rank * num_local + rows] = 1.0
        return -F.logsigmoid(signs * logits).sum() / num_local
