"""Symmetric InfoNCE as trained in LAION-CLAP / open_clip (`ClipLoss`).

Notation: N = world_size * B is the global batch, s = exp(logit_scale_a), a_i and t_i the unit-norm audio
and text embeddings of pair i. The loss of the global batch is

    L = 1/2 * [ 1/N sum_i CE(s * a_i . t_j over j, label i) + 1/N sum_i CE(s * t_i . a_j over j, label i) ].

Both modes below give, after DDP averages the gradients over ranks, exactly dL/dtheta of one process
that saw the whole global batch (see docs/losses.md for the derivation):
- local_loss=False: every rank computes L itself on the gathered (N, N) logits; the returned value is L.
- local_loss=True: rank r computes only its B rows of each direction against all N columns, (B, N)
  logits, labels offset by r * B. The returned value L_r is per rank and mean_r(L_r) = L.

Hard negatives (`hard_negative_beta` = beta > 0, HN-NCE of Radenovic et al. 2023): in each row's softmax
the negatives j != i are weighted by w_ij = (C - 1) * exp(beta * l_ij) / sum_{k != i} exp(beta * l_ik),
C the number of columns and l the scaled logits, so negatives similar to the anchor count more. This is a
cross-entropy on the logits l_ij + log w_ij (`hard_negative_logits`); the weights are row-wise and carry
gradient (the paper's formula as written), so both modes above stay exact. beta = 0 is plain InfoNCE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clap_train.distributed.gather import all_gather_no_grad, all_gather_with_grad, scale_grad, world_info


def check_paired(audio_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None:
    """Contrastive losses pair row i of audio with row i of text; raise ValueError otherwise."""
    if audio_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"audio_embeds {tuple(audio_embeds.shape)} and text_embeds {tuple(text_embeds.shape)} must be "
            "paired row by row"
        )


def hard_negative_logits(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """(R, C) scaled logits, positive of row r at column labels[r] -> (R, C) logits whose cross-entropy
    with `labels` is HN-NCE: negatives shifted by log w_rj (module docstring). beta = 0 returns `logits`."""
    if beta == 0 or logits.shape[1] < 2:  # no negatives to weight
        return logits
    positive = F.one_hot(labels, logits.shape[1]).bool()  # (R, C)
    negatives = (beta * logits).masked_fill(positive, float("-inf"))  # (R, C)
    log_weights = math.log(logits.shape[1] - 1) + beta * logits - negatives.logsumexp(dim=1, keepdim=True)
    return torch.where(positive, logits, logits + log_weights)


class ClipLoss(nn.Module):
    """0.5 * [CE(audio->text) + CE(text->audio)] over features gathered from every rank.

    Args:
        gather_with_grad: gather with a gradient-carrying all-gather (LAION default). If False, features are
            gathered without gradient and this rank's own rows are put back with their gradient (open_clip).
            Then only the local rows receive gradient, so it is multiplied by world_size to stand in for the
            other ranks' identical losses; this keeps the DDP-averaged gradient exact (open_clip omits the
            factor, which shrinks the encoder gradient by 1/world_size) and saves the backward all-reduce.
        local_loss: compute only the local rows of the logits against all gathered columns (B, N) instead of
            the full (N, N) matrix; labels are offset by rank * B.
        hard_negative_beta: HN-NCE concentration beta >= 0 (module docstring); 0 is plain InfoNCE, the
            paper's CLIP runs use 0.5.

    Forward takes the local rank's unit-norm `audio_embeds`, `text_embeds` (B, D), the same B on every
    rank, and the raw (log) `logit_scale_a` (1 element). `logit_scale_t` is accepted for the common loss
    signature and not used: LAION-CLAP's released models scale both directions by exp(logit_scale_a).

    Raises:
        ValueError: local_loss=True with gather_with_grad=False (the gradient through the other ranks'
            columns would be lost, so the result would not be the big-batch gradient); hard_negative_beta
            negative or not finite.
    """

    def __init__(self, gather_with_grad: bool = True, local_loss: bool = False, hard_negative_beta: float = 0.0):
        super().__init__()
        if local_loss and not gather_with_grad:
            raise ValueError(
                "local_loss=True requires gather_with_grad=True: without it the other ranks' columns carry no "
                "gradient and the loss no longer trains on the global batch"
            )
        if not (math.isfinite(hard_negative_beta) and hard_negative_beta >= 0):
            raise ValueError(f"hard_negative_beta must be a finite number >= 0, got {hard_negative_beta}")
        self.hard_negative_beta = float(hard_negative_beta)
        self.gather_with_grad = gather_with_grad
        self.local_loss = local_loss
        self._labels: dict[tuple[torch.device, int, int], torch.Tensor] = {}

    def extra_repr(self) -> str:
        return (f"gather_with_grad={self.gather_with_grad}, local_loss={self.local_loss}, "
                f"hard_negative_beta={self.hard_negative_beta}")

    def _gather(self, x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        """(B, D) local -> (N, D) rows of every rank, rank-major."""
        if self.gather_with_grad:
            return all_gather_with_grad(x)
        parts = all_gather_no_grad(x)
        parts[rank] = scale_grad(x, float(world_size))
        return torch.cat(parts, dim=0)

    def _cached_labels(self, device: torch.device, num_rows: int, offset: int) -> torch.Tensor:
        key = (device, num_rows, offset)
        if key not in self._labels:
            self._labels[key] = torch.arange(offset, offset + num_rows, device=device)
        return self._labels[key]

    def forward(
        self,
        audio_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        logit_scale_a: torch.Tensor,
        logit_scale_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar loss; see the module docstring for what it equals per rank."""
        check_paired(audio_embeds, text_embeds)
        rank, world_size = world_info()
        scale = logit_scale_a.exp()
        all_audio = self._gather(audio_embeds, rank, world_size)  # (N, D)
        all_text = self._gather(text_embeds, rank, world_size)  # (N, D)
        if self.local_loss:
            logits_per_audio = scale * audio_embeds @ all_text.T  # (B, N)
            logits_per_text = scale * text_embeds @ all_audio.T  # (B, N)
            labels = self._cached_labels(audio_embeds.device, audio_embeds.shape[0], rank * audio_embeds.shape[0])
        else:
            logits_per_audio = scale * all_audio @ all_text.T  # (N, N)
            logits_per_text = logits_per_audio.T
            labels = self._cached_labels(audio_embeds.device, all_audio.shape[0], 0)
        beta = self.hard_negative_beta
        logits_per_audio = hard_negative_logits(logits_per_audio, labels, beta)
        logits_per_text = hard_negative_logits(logits_per_text, labels, beta)
        return 0.5 * (F.cross_entropy(logits_per_audio, labels) + F.cross_entropy(logits_per_text, labels))
