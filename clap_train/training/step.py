"""The pure training step: batch -> loss and the scalars worth logging."""

from __future__ import annotations

import torch
from torch import nn

from clap_train.losses.multipos import pair_ids


def loss_inputs(loss_fn: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """Keyword inputs a loss asks for beyond the common signature: `pair_ids` when `loss_fn.uses_pair_ids`,
    the teacher's embeddings of the batch when `loss_fn.uses_teacher` (`DistillationLoss`)."""
    inputs = {}
    if getattr(loss_fn, "uses_pair_ids", False):
        inputs["pair_ids"] = pair_ids(batch["key"], batch["captions"], batch["text_to_audio"])
    if getattr(loss_fn, "uses_teacher", False):
        inputs.update(loss_fn.teacher(batch))
    return inputs


def contrastive_step(model: nn.Module, loss_fn: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Embed both modalities and apply the contrastive loss (which owns any cross-rank gather)."""
    embeds = model(batch)
    loss = loss_fn(embeds["audio_embeds"], embeds["text_embeds"], model.logit_scale_a, model.logit_scale_t,
                   **loss_inputs(loss_fn, batch))
    logs = {
        "loss": loss.detach(),
        "logit_scale_a": model.logit_scale_a.detach().exp().squeeze(),
        "logit_scale_t": model.logit_scale_t.detach().exp().squeeze(),
    }
    return loss, logs
