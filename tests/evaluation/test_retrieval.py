"""retrieval_metrics: hand-computed cases, tie modes, and a loop reference of the LAION/WavCaps protocol."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clap_train.evaluation.retrieval import audio_to_text_positions, retrieval_metrics, top_k_retrievals


def scores_as_embeddings(scores: torch.Tensor):
    """Embeddings whose dot products are exactly `scores` (Nt, Na): audio = identity, text = score rows."""
    num_clips = scores.shape[1]
    return torch.eye(num_clips, dtype=torch.float64), scores.double()


def reference_metrics(audio, text, text_to_audio, map_k=10):
    """Loop reference following LAION-CLAP evaluate_clotho_audiocaps / WavCaps a2t(), t2a() (no ties)."""
    sims = (text.double() @ audio.double().T).numpy()  # (Nt, Na)
    t2a = np.array([np.where(np.argsort(-sims[t]) == int(text_to_audio[t]))[0][0] for t in range(len(text))])
    best, ap = [], []
    for clip in sorted(set(text_to_audio.tolist())):
        ranking = np.argsort(-sims[:, clip])
        positions = np.sort([np.where(ranking == t)[0][0] for t in np.where(text_to_audio.numpy() == clip)[0]])
        best.append(positions[0])
        hits = positions[positions < map_k]
        ap.append(np.sum(np.arange(1, len(hits) + 1) / (hits + 1)) / len(positions))
    best = np.array(best)
    out = {}
    for name, ranks in (("t2a", t2a), ("a2t", best)):
        for k in (1, 5, 10):
            out[f"{name}_R@{k}"] = np.mean(ranks < k)
        out[f"{name}_mean_rank"] = ranks.mean() + 1
        out[f"{name}_median_rank"] = np.floor(np.median(ranks)) + 1
    out["t2a_mAP@10"] = np.mean(np.where(t2a < map_k, 1 / (t2a + 1), 0.0))
    out["a2t_mAP@10"] = np.mean(ap)
    return out


def test_perfect_ranking_scores_one():
    audio = torch.eye(6)
    text = torch.eye(6).repeat_interleave(5, dim=0)  # K = 5 captions per clip, all identical to their clip
    text_to_audio = torch.arange(6).repeat_interleave(5)
    m = retrieval_metrics(audio, text, text_to_audio)
    for name in ("t2a", "a2t"):
        for key in ("R@1", "R@5", "R@10", "mAP@10", "mean_rank", "median_rank"):
            assert m[f"{name}_{key}"] == 1.0, key


def test_reversed_ranking_scores_zero():
    # every caption scores its own clip lowest (-1) and all others 0 -> rank 11 of 12
    audio = torch.eye(12)
    text = -torch.eye(12)
    m = retrieval_metrics(audio, text, torch.arange(12))
    for name in ("t2a", "a2t"):
        assert m[f"{name}_R@10"] == 0.0 and m[f"{name}_mAP@10"] == 0.0
        assert m[f"{name}_mean_rank"] == 12.0 and m[f"{name}_median_rank"] == 12.0


def test_one_caption_hand_values():
    # caption t's clip is at 0-based rank t: 0, 1, 2, 9, 10
    ranks = [0, 1, 2, 9, 10]
    num_clips = 12
    scores = torch.zeros(len(ranks), num_clips)
    for t, r in enumerate(ranks):
        scores[t] = -torch.arange(num_clips, dtype=torch.float32)  # clip c has score -c: order 0, 1, 2, ...
        scores[t, [t, r]] = scores[t, [r, t]]  # swap so the true clip t sits at rank r
    audio, text = scores_as_embeddings(scores)
    m = retrieval_metrics(audio, text, torch.arange(len(ranks)))
    assert m["t2a_R@1"] == pytest.approx(1 / 5)
    assert m["t2a_R@5"] == pytest.approx(3 / 5)
    assert m["t2a_R@10"] == pytest.approx(4 / 5)
    assert m["t2a_mAP@10"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 10 + 0) / 5)
    assert m["t2a_mean_rank"] == pytest.approx((1 + 2 + 3 + 10 + 11) / 5)
    assert m["t2a_median_rank"] == 3.0


def test_multi_caption_a2t_map_by_hand():
    # 3 clips x K=5 captions (captions 5c..5c+4 belong to clip c). Each clip ranks all 15 captions;
    # clip 0 puts its captions at positions 0, 2, 5, 11, 14; clip 1 at 0..4; clip 2 at 10..14.
    positions = {0: [0, 2, 5, 11, 14], 1: [0, 1, 2, 3, 4], 2: [10, 11, 12, 13, 14]}
    scores = torch.zeros(15, 3)  # (Nt, Na)
    for clip, own in positions.items():
        others = [p for p in range(15) if p not in own]
        order = torch.empty(15, dtype=torch.long)  # caption at each position
        order[own] = torch.arange(5 * clip, 5 * clip + 5)
        order[others] = torch.tensor([t for t in range(15) if t // 5 != clip])
        scores[order, clip] = 15.0 - torch.arange(15, dtype=torch.float32)
    audio, text = scores_as_embeddings(scores)
    text_to_audio = torch.arange(3).repeat_interleave(5)
    got, _ = audio_to_text_positions(audio, text, text_to_audio)
    for clip, own in positions.items():
        assert sorted(got[5 * clip : 5 * clip + 5].tolist()) == own
    m = retrieval_metrics(audio, text, text_to_audio)
    ap0 = (1 / 1 + 2 / 3 + 3 / 6) / 5  # hits at positions 0, 2, 5; 11 and 14 are past the cut-off
    assert m["a2t_mAP@10"] == pytest.approx((ap0 + 1.0 + 0.0) / 3)
    assert m["a2t_R@1"] == pytest.approx(2 / 3) and m["a2t_R@10"] == pytest.approx(2 / 3)
    assert m["a2t_mean_rank"] == pytest.approx((1 + 1 + 11) / 3)
    assert m["a2t_median_rank"] == 1.0
    ref = reference_metrics(audio, text, text_to_audio)  # rows of `scores` tie, so compare a2t only
    assert {k: v for k, v in m.items() if k.startswith("a2t")} == pytest.approx(
        {k: v for k, v in ref.items() if k.startswith("a2t")}
    )


def test_ties_pessimistic_and_optimistic():
    # a collapsed model: every score equal
    audio = F.normalize(torch.ones(4, 3), dim=-1)
    text = F.normalize(torch.ones(8, 3), dim=-1)
    text_to_audio = torch.arange(4).repeat_interleave(2)
    pess = retrieval_metrics(audio, text, text_to_audio)
    assert pess["t2a_R@1"] == 0.0 and pess["t2a_mean_rank"] == 4.0  # the 3 other clips rank ahead
    # a2t: the 6 other captions rank ahead, own captions at positions 6, 7 -> AP = (1/7 + 2/8) / 2
    assert pess["a2t_R@5"] == 0.0 and pess["a2t_mean_rank"] == 7.0
    assert pess["a2t_mAP@10"] == pytest.approx((1 / 7 + 2 / 8) / 2)
    opt = retrieval_metrics(audio, text, text_to_audio, ties="optimistic")
    for name in ("t2a", "a2t"):
        assert opt[f"{name}_R@1"] == 1.0 and opt[f"{name}_mAP@10"] == 1.0
    # a partial tie: clip 1 ties the true clip 0, clip 2 is below
    scores = torch.tensor([[1.0, 1.0, 0.0]])
    audio, text = scores_as_embeddings(scores)
    assert retrieval_metrics(audio, text, torch.tensor([0]))["t2a_median_rank"] == 2.0
    assert retrieval_metrics(audio, text, torch.tensor([0]), ties="optimistic")["t2a_median_rank"] == 1.0


def test_ties_among_own_captions_cost_nothing():
    # both captions of clip 0 tie at the top; pessimistic ties only count irrelevant captions
    scores = torch.tensor([[2.0, 0.0], [2.0, 1.5], [1.0, 2.0], [0.0, 1.0]])
    audio, text = scores_as_embeddings(scores)
    m = retrieval_metrics(audio, text, torch.tensor([0, 0, 1, 1]))
    # clip 0: own captions at positions 0, 1 -> AP 1; clip 1: caption 2 at 0, caption 3 at 2 -> (1 + 2/3)/2
    assert m["a2t_mAP@10"] == pytest.approx((1.0 + (1 + 2 / 3) / 2) / 2)


@pytest.mark.parametrize("captions_per_clip", [1, 5])
def test_matches_loop_reference_on_random_embeddings(captions_per_clip):
    gen = torch.Generator().manual_seed(captions_per_clip)
    num_clips = 40
    audio = F.normalize(torch.randn(num_clips, 8, generator=gen), dim=-1)
    text_to_audio = torch.arange(num_clips).repeat_interleave(captions_per_clip)
    text = F.normalize(audio[text_to_audio] + 1.2 * torch.randn(len(text_to_audio), 8, generator=gen), dim=-1)
    m = retrieval_metrics(audio, text, text_to_audio, chunk_size=7)
    assert m == pytest.approx(reference_metrics(audio, text, text_to_audio))
    assert 0.0 < m["t2a_R@1"] < 1.0 and 0.0 < m["a2t_mAP@10"] < 1.0  # a non-degenerate case


def test_invariant_to_row_order_and_variable_k():
    gen = torch.Generator().manual_seed(0)
    audio = F.normalize(torch.randn(15, 6, generator=gen), dim=-1)
    text_to_audio = torch.tensor([c for c in range(15) for _ in range(1 + c % 3)])  # K = 1, 2 or 3
    text = F.normalize(audio[text_to_audio] + torch.randn(len(text_to_audio), 6, generator=gen), dim=-1)
    m = retrieval_metrics(audio, text, text_to_audio)
    assert m == pytest.approx(reference_metrics(audio, text, text_to_audio))
    clip_perm, text_perm = torch.randperm(15, generator=gen), torch.randperm(len(text), generator=gen)
    new_row = torch.argsort(clip_perm)  # where each old clip lands
    shuffled = retrieval_metrics(audio[clip_perm], text[text_perm], new_row[text_to_audio[text_perm]], chunk_size=4)
    assert shuffled == pytest.approx(m)


def test_clip_without_caption_is_only_a_candidate():
    audio = torch.eye(3)
    text = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 2.0]])  # caption 1 prefers the uncaptioned clip 2
    m = retrieval_metrics(audio, text, torch.tensor([0, 1]))
    assert m["t2a_R@1"] == 0.5
    assert m["a2t_R@1"] == 1.0  # two audio queries (clips 0 and 1) only


def test_validation_errors():
    audio, text = torch.eye(3), torch.eye(3)
    with pytest.raises(ValueError, match="text_to_audio"):
        retrieval_metrics(audio, text, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="text_to_audio"):
        retrieval_metrics(audio, text, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(audio, text, torch.arange(3), ties="random")
    with pytest.raises(ValueError, match="share D"):
        retrieval_metrics(audio, torch.eye(4)[:3], torch.arange(3))


def test_top_k_retrievals():
    scores, indices = top_k_retrievals(
        torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), k=2
    )
    assert indices.tolist() == [[1, 2]] and scores[0].tolist() == pytest.approx([1.0, 0.8])
