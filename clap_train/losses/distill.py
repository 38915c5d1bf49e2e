"""Distillation from a teacher CLAP (`DistillationLoss`): the student's contrastive loss plus a KL term that
matches the teacher's audio-text similarity distributions (tinyCLAP, Paissan & Farella 2024; CLIP-KD).

With the global batch of N rows, student logits l^s = exp(logit_scale_a) * a^s . t^s^T and teacher logits
l^t = s_t * a^t . t^t^T (the teacher's own scale), the added term is

    KD = 1/2 * [ 1/N sum_i KL(softmax(l^t_i.) || softmax(l^s_i.)) + 1/N sum_i KL(softmax(l^t_.i) || softmax(l^s_.i)) ]

and the loss is base + weight * KD. Rank r computes its B rows of each direction against all N gathered
columns (student embeddings with gradient, teacher embeddings without) and returns base_r + weight * KD_r,
with mean_r(KD_r) = KD: exact across ranks like the local ClipLoss (for every exact `base`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clap_train.distributed.gather import all_gather_no_grad, all_gather_with_grad
from clap_train.losses.contrastive import check_paired


def _kl_rows(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher) || softmax(student)), both (R, C)."""
    teacher_log_p = teacher_logits.log_softmax(dim=1)
    return (teacher_log_p.exp() * (teacher_log_p - student_logits.log_softmax(dim=1))).sum(dim=1).mean()


class DistillationLoss(nn.Module):
    """`base` loss + `weight` * KL to the teacher's similarity distributions (module docstring).

    Args:
        base: the student's contrastive loss (ClipLoss, SigLipLoss, MultiPositiveLoss).
        weight: weight of the KL term, >= 0.
        teacher: the frozen teacher the training step embeds the batch with (`training.distill.Teacher`),
            held here so it follows the module's device, dtype and sharding; the loss never calls it.

    Forward: the common signature plus `teacher_audio`, `teacher_text` (B, D_t) unit-norm rows of this rank
    and `teacher_logit_scale` (the teacher's exp scale, a scalar tensor); other keywords go to `base`.
    `uses_pair_ids` follows `base`, so a multi-positive student still receives its ids.

    Raises:
        ValueError: weight negative or not finite; teacher rows not paired with the student's.
    """

    uses_teacher = True

    def __init__(self, base: nn.Module, weight: float = 1.0, teacher: nn.Module | None = None):
        super().__init__()
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"distill.weight must be a finite number >= 0, got {weight}")
        self.base, self.weight, self.teacher = base, float(weight), teacher
        self.uses_pair_ids = getattr(base, "uses_pair_ids", False)

    def forward(self, audio_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale_a: torch.Tensor,
                logit_scale_t: torch.Tensor | None = None, *, teacher_audio: torch.Tensor,
                teacher_text: torch.Tensor, teacher_logit_scale: torch.Tensor, **base_kwargs) -> torch.Tensor:
        loss = self.base(audio_embeds, text_embeds, logit_scale_a, logit_scale_t, **base_kwargs)
        check_paired(teacher_audio, teacher_text)
        if teacher_audio.shape[0] != audio_embeds.shape[0]:
            raise ValueError(f"teacher rows {teacher_audio.shape[0]} != student rows {audio_embeds.shape[0]}")
        all_audio = all_gather_with_grad(audio_embeds)  # (N, D)
        all_text = all_gather_with_grad(text_embeds)  # (N, D)
        dtype = audio_embeds.dtype
        teacher_audio, teacher_text = teacher_audio.detach().to(dtype), teacher_text.detach().to(dtype)
        teacher_all_audio = torch.cat(all_gather_no_grad(teacher_audio), dim=0)  # (N, D_t)
        teacher_all_text = torch.cat(all_gather_no_grad(teacher_text), dim=0)  # (N, D_t)
        scale, teacher_scale = logit_scale_a.exp(), teacher_logit_scale.detach().to(dtype)
        audio_to_text = _kl_rows(teacher_scale * teacher_audio @ teacher_all_text.T,
                                 scale * audio_embeds @ all_text.T)  # over (B, N) logits
        text_to_audio = _kl_rows(teacher_scale * teacher_text @ teacher_all_audio.T,
                                 scale * text_embeds @ all_audio.T)  # over (B, N) logits
        distill = 0.5 * (audio_to_text + text_to_audio)
        return loss + self.weight * distill
