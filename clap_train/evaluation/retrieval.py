"""Text-audio retrieval metrics on full (already gathered) embedding sets."""

from __future__ import annotations

import torch


def retrieval_metrics(
    audio_embeds: torch.Tensor, text_embeds: torch.Tensor, text_to_audio: torch.Tensor, ks=(1, 5, 10)
) -> dict[str, float]:
    """Recall@k for text->audio and audio->text.

    Args:
        audio_embeds: (Na, D) unit-norm clip embeddings.
        text_embeds: (Nt, D) unit-norm caption embeddings.
        text_to_audio: (Nt,) index of each caption's clip.
    For audio->text a clip's rank is the best rank among its captions.
    """
    sims = text_embeds.float() @ audio_embeds.float().T  # (Nt, Na)
    target = sims.gather(1, text_to_audio[:, None])  # (Nt, 1)
    t2a_rank = (sims > target).sum(1)  # 0-based rank of the true clip per caption
    # audio->text: rank of each caption among all captions for its clip's audio query
    sims_a = sims.T  # (Na, Nt)
    caption_scores = sims_a[text_to_audio, torch.arange(len(text_to_audio))]  # (Nt,)
    per_caption_rank = (sims_a[text_to_audio] > caption_scores[:, None]).sum(1)  # (Nt,)
    a2t_rank = torch.full((audio_embeds.shape[0],), sims.shape[0], dtype=torch.long)
    a2t_rank = a2t_rank.scatter_reduce(0, text_to_audio, per_caption_rank, reduce="amin")
    metrics = {}
    for name, ranks in (("t2a", t2a_rank), ("a2t", a2t_rank)):
        for k in ks:
            metrics[f"{name}_R@{k}"] = (ranks < k).float().mean().item()
    return metrics
