"""The pure training step: batch -> loss and the scalars worth logging."""

from __future__ import annotations

import torch
from torch import nn


def contrastive_step(model: nn.Module, loss_fn: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Embed both modalities and apply the contrastive loss (which owns any cross-rank gather)."""
    embeds = model(batch)
    loss = loss_fn(embeds["audio_embeds"], embeds["text_embeds"], model.logit_scale_a, model.logit_scale_t)
    logs = {
        "loss": loss.detach(),
        "logit_scale_a": model.logit_scale_a.detach().exp().squeeze(),
        "logit_scale_t": model.logit_scale_t.detach().exp().squeeze(),
    }
    return loss, logs
