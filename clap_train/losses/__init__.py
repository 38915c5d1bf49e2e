"""Contrastive losses: `loss(audio_embeds, text_embeds, logit_scale_a, logit_scale_t) -> Tensor`."""

from clap_train.losses.contrastive import ClipLoss
from clap_train.losses.multipos import MultiPositiveLoss
from clap_train.losses.siglip import SigLipLoss

__all__ = ["ClipLoss", "MultiPositiveLoss", "SigLipLoss"]
