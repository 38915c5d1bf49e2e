"""Text-audio retrieval metrics on full (already gathered) embedding sets.

Protocol (the one LAION-CLAP and WavCaps report for Clotho / AudioCaps; docs/evaluation.md):
every caption is a text query whose single relevant item is its clip; every clip with at least
one caption is an audio query whose relevant items are all of its captions. Ranks are 0-based
internally and reported 1-based. Ties are broken pessimistically (a candidate scoring exactly
the same as a relevant item is ranked before it), so a collapsed model scores R@1 = 0 instead of
a sort-order-dependent value, and the numbers never depend on the order of the rows.
"""

from __future__ import annotations

import numpy as np
import torch

TIE_MODES = ("pessimistic", "optimistic")


def _beats(candidate: torch.Tensor, reference: torch.Tensor, ties: str) -> torch.Tensor:
    """Whether `candidate` scores rank ahead of `reference` (broadcasting)."""
    return candidate >= reference if ties == "pessimistic" else candidate > reference


def text_to_audio_ranks(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_audio: torch.Tensor,
    ties: str = "pessimistic",
    chunk_size: int = 1024,
) -> torch.Tensor:
    """0-based rank of each caption's clip among all clips -> (Nt,) int64.

    The rank counts the other clips that score at least as high (pessimistic) or strictly higher
    (optimistic) than the true clip. Text queries are processed `chunk_size` at a time, so the peak
    memory is (chunk_size, Na) scores.
    """
    audio = audio_embeds.float()
    ranks = []
    for start in range(0, text_embeds.shape[0], chunk_size):
        queries = text_embeds[start : start + chunk_size].float()  # (c, D)
        targets = text_to_audio[start : start + chunk_size]  # (c,)
        sims = queries @ audio.T  # (c, Na)
        target_sims = sims.gather(1, targets[:, None])  # (c, 1)
        beats = _beats(sims, target_sims, ties)
        beats.scatter_(1, targets[:, None], False)  # the true clip never ranks ahead of itself
        ranks.append(beats.sum(1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def audio_to_text_positions(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_audio: torch.Tensor,
    ties: str = "pessimistic",
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each caption, its 0-based position in its own clip's ranking of all captions.

    Each clip is a query over all Nt captions; its K relevant captions are its own. Sorting the K
    relevant captions by score, the m-th (m = 0..K-1) sits at position m plus the number of
    irrelevant captions ranked ahead of it (ties with irrelevant captions per `ties`; ties among
    a clip's own captions cost nothing since they are all relevant).

    Returns:
        positions: (Nt,) int64, the position of each caption in its clip's ranking.
        order: (Nt,) int64, the index of each caption among its clip's relevant captions when
            those are sorted by position (0 for the best-ranked caption of each clip).
    """
    audio = audio_embeds.float()
    text = text_embeds.float()
    num_texts = text.shape[0]
    irrelevant_ahead = []
    for start in range(0, num_texts, chunk_size):
        clips = text_to_audio[start : start + chunk_size]  # (c,)
        sims = audio[clips] @ text.T  # (c, Nt): each row is the caption's clip scoring every caption
        own_sims = sims[torch.arange(len(clips)), torch.arange(start, start + len(clips))]  # (c,)
        relevant = clips[:, None] == text_to_audio[None, :]  # (c, Nt)
        ahead = _beats(sims, own_sims[:, None], ties) & ~relevant
        irrelevant_ahead.append(ahead.sum(1))
    if not irrelevant_ahead:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    irrelevant_ahead = torch.cat(irrelevant_ahead)  # (Nt,)
    # Fewer irrelevant captions ahead = higher score, so sorting by (clip, irrelevant_ahead) lists
    # each clip's captions best first; a caption's index in its clip's group is m.
    sort_key = text_to_audio.long() * (num_texts + 1) + irrelevant_ahead
    sorted_idx = torch.argsort(sort_key, stable=True)
    sorted_clips = text_to_audio[sorted_idx]
    group_start = torch.ones(num_texts, dtype=torch.bool)
    group_start[1:] = sorted_clips[1:] != sorted_clips[:-1]
    start_pos = torch.cummax(torch.where(group_start, torch.arange(num_texts), 0), 0).values
    order = torch.empty(num_texts, dtype=torch.long)
    order[sorted_idx] = torch.arange(num_texts) - start_pos
    return order + irrelevant_ahead, order


def _rank_summary(name: str, ranks: torch.Tensor, ks, map_k: int, average_precision: torch.Tensor) -> dict:
    """Recall@k, mAP@map_k, mean and median rank (1-based) of 0-based `ranks`."""
    ranks_np = ranks.double().numpy()
    metrics = {f"{name}_R@{k}": float((ranks_np < k).mean()) for k in ks}
    metrics[f"{name}_mAP@{map_k}"] = float(average_precision.double().mean())
    metrics[f"{name}_mean_rank"] = float(ranks_np.mean() + 1)
    # floor(median) + 1 as in LAION-CLAP / WavCaps: for an even count the median of 0-based ranks
    # may be x.5, floored before converting to 1-based.
    metrics[f"{name}_median_rank"] = float(np.floor(np.median(ranks_np)) + 1)
    return metrics


def retrieval_metrics(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_audio: torch.Tensor,
    ks=(1, 5, 10),
    map_k: int = 10,
    ties: str = "pessimistic",
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@k, mAP@map_k, mean and median rank for text->audio and audio->text.

    Args:
        audio_embeds: (Na, D) unit-norm clip embeddings (one row per unique clip).
        text_embeds: (Nt, D) unit-norm caption embeddings.
        text_to_audio: (Nt,) int64 index of each caption's clip; K captions per clip give the
            multi-caption protocol (K may vary per clip; one-caption datasets are K = 1).
        ks: the recall cut-offs.
        map_k: the mAP cut-off (10 in the papers).
        ties: "pessimistic" (default: equal scores rank ahead of the relevant item) or
            "optimistic" (only strictly higher scores do).
        chunk_size: text queries scored at a time; peak memory is chunk_size x max(Na, Nt) scores.

    Returns:
        `t2a_R@k`, `t2a_mAP@{map_k}`, `t2a_mean_rank`, `t2a_median_rank` over all Nt captions, and
        the same `a2t_` keys over the clips that have at least one caption:
        - t2a: rank = position of the caption's clip; AP = 1 / (rank + 1) if rank < map_k else 0.
        - a2t: rank = best position among the clip's K captions (recall, mean/median rank);
          AP = sum over its captions at positions p_1 < ... < p_m < map_k of (i / (p_i + 1)), divided
          by K (all K captions count as relevant, as in LAION-CLAP / WavCaps).

    Raises:
        ValueError: on mismatched shapes, out-of-range `text_to_audio`, empty inputs, bad `ties`.
    """
    if ties not in TIE_MODES:
        raise ValueError(f"ties must be one of {TIE_MODES}, got {ties!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if map_k < 1:
        raise ValueError(f"map_k must be >= 1, got {map_k}")
    if audio_embeds.ndim != 2 or text_embeds.ndim != 2 or audio_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(
            f"audio_embeds (Na, D) and text_embeds (Nt, D) must share D, got {tuple(audio_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}"
        )
    if text_to_audio.shape != (text_embeds.shape[0],):
        raise ValueError(f"text_to_audio must have shape ({text_embeds.shape[0]},), got {tuple(text_to_audio.shape)}")
    if text_embeds.shape[0] == 0 or audio_embeds.shape[0] == 0:
        raise ValueError("retrieval_metrics needs at least one clip and one caption")
    text_to_audio = text_to_audio.long().cpu()
    if text_to_audio.min() < 0 or text_to_audio.max() >= audio_embeds.shape[0]:
        raise ValueError(f"text_to_audio values must lie in [0, {audio_embeds.shape[0]}), got {text_to_audio}")
    audio_embeds, text_embeds = audio_embeds.detach().cpu(), text_embeds.detach().cpu()

    t2a = text_to_audio_ranks(audio_embeds, text_embeds, text_to_audio, ties, chunk_size)
    t2a_ap = torch.where(t2a < map_k, 1.0 / (t2a.double() + 1), 0.0)
    metrics = _rank_summary("t2a", t2a, ks, map_k, t2a_ap)

    positions, order = audio_to_text_positions(audio_embeds, text_embeds, text_to_audio, ties, chunk_size)
    clips, clip_of_text = torch.unique(text_to_audio, return_inverse=True)  # queried clips only
    num_captions = torch.bincount(clip_of_text, minlength=len(clips)).double()
    best = torch.full((len(clips),), positions.max() + 1, dtype=torch.long)
    best = best.scatter_reduce(0, clip_of_text, positions, reduce="amin")
    hit_precision = torch.where(positions < map_k, (order.double() + 1) / (positions.double() + 1), 0.0)
    a2t_ap = torch.zeros(len(clips), dtype=torch.float64).index_add_(0, clip_of_text, hit_precision) / num_captions
    metrics.update(_rank_summary("a2t", best, ks, map_k, a2t_ap))
    return metrics


def top_k_retrievals(
    query_embeds: torch.Tensor, candidate_embeds: torch.Tensor, k: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k candidates per query by dot product -> (scores (Q, k), indices (Q, k)), best first."""
    sims = query_embeds.float() @ candidate_embeds.float().T  # (Q, Nc)
    scores, indices = sims.topk(min(k, candidate_embeds.shape[0]), dim=1)
    return scores, indices
