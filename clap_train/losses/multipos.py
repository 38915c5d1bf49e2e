"""Multi-positive InfoNCE (`MultiPositiveLoss`): captions of the same clip and identical caption texts are
positives of each other, not negatives.

Each of the N = world_size * B global rows carries `pair_ids` (2 int64): a hash of its clip's key and a hash
of its caption text (`pair_ids`, computed by the training step from the batch). Rows i and j are positives
when they share the clip or the caption text: P_ij = [clip_i == clip_j or text_i == text_j] (P_ii = 1). With
l = s * a . t^T the scaled (N, N) logits and q_ij = P_ij / sum_j P_ij, the loss of the global batch is

    L = 1/2 * [ 1/N sum_i CE_soft(l_i., q_i.) + 1/N sum_i CE_soft(l_.i, q_i.) ],
    CE_soft(x, q) = -sum_j q_j log softmax(x)_j,

the "L_out" form of supervised contrastive learning (Khosla et al. 2020) with CLIP's two directions. With
no repeated clip or caption, P is the identity and L is ClipLoss's InfoNCE.

Distributed exactly like ClipLoss(local_loss=True): rank r computes its B rows of each direction against all
N gathered columns (embeddings with gradient, ids without) and returns L_r with mean_r(L_r) = L.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from clap_train.distributed.gather import all_gather_no_grad, all_gather_with_grad, world_info
from clap_train.losses.contrastive import check_paired


def _stable_hash(text: str) -> int:
    """A signed 64-bit hash that is the same in every process (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def pair_ids(keys: Sequence[str], captions: Sequence[str], text_to_audio: torch.Tensor) -> torch.Tensor:
    """(N, 2) int64 on text_to_audio's device: [hash of the clip key, hash of the caption text] per caption.

    Args:
        keys: the B sample keys of the batch (`batch["key"]`).
        captions: the N caption strings (`batch["captions"]`).
        text_to_audio: (N,) index of each caption's clip in `keys`.
    Raises:
        ValueError: captions and text_to_audio disagree on N.
    """
    if len(captions) != len(text_to_audio):
        raise ValueError(f"batch has {len(captions)} captions but {len(text_to_audio)} text_to_audio entries")
    clips = [_stable_hash(keys[index]) for index in text_to_audio.tolist()]
    texts = [_stable_hash(caption.strip()) for caption in captions]
    return torch.tensor(list(zip(clips, texts)), dtype=torch.long, device=text_to_audio.device).reshape(-1, 2)


class MultiPositiveLoss(nn.Module):
    """Symmetric InfoNCE whose targets are spread uniformly over every positive (module docstring).

    Forward takes the local rank's unit-norm `audio_embeds`, `text_embeds` (B, D) paired by row, the raw (log)
    `logit_scale_a`, and `pair_ids` (B, 2) from `pair_ids()`; without `pair_ids` every row is only its own
    positive (plain InfoNCE). `logit_scale_t` is accepted for the common signature and not used.
    The training step passes `pair_ids` to losses whose `uses_pair_ids` is True.

    Raises:
        ValueError: unpaired embeddings, or pair_ids not of shape (B, 2).
    """

    uses_pair_ids = True

    def forward(
        self,
        audio_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        logit_scale_a: torch.Tensor,
        logit_scale_t: torch.Tensor | None = None,
        pair_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar L_r; its mean over ranks is the global-batch loss L."""
        check_paired(audio_embeds, text_embeds)
        rank, _ = world_info()
        num_local = audio_embeds.shape[0]
        if pair_ids is None:  # each row its own clip and caption: distinct global row numbers
            rows = torch.arange(num_local, device=audio_embeds.device) + rank * num_local
            pair_ids = torch.stack([rows, rows], dim=1)
        if pair_ids.shape != (num_local, 2):
            raise ValueError(f"pair_ids must have shape ({num_local}, 2), got {tuple(pair_ids.shape)}")
        all_ids = torch.cat(all_gather_no_grad(pair_ids), dim=0)  # (N, 2)
        positives = ((pair_ids[:, None, :] == all_ids[None, :, :]).any(dim=2)).to(audio_embeds.dtype)  # (B, N)
        targets = positives / positives.sum(dim=1, keepdim=True)  # (B, N), rows sum to 1
        scale = logit_scale_a.exp()
        all_audio = all_gather_with_grad(audio_embeds)  # (N, D)
        all_text = all_gather_with_grad(text_embeds)  # (N, D)
        logits_per_audio = scale * audio_embeds @ all_text.T  # (B, N)
        logits_per_text = scale * text_embeds @ all_audio.T  # (B, N)
        audio_to_text = -(targets * logits_per_audio.log_softmax(dim=1)).sum(dim=1).mean()
        text_to_audio = -(targets * logits_per_text.log_softmax(dim=1)).sum(dim=1).mean()
        return 0.5 * (audio_to_text + text_to_audio)
