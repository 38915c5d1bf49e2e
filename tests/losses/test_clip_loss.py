"""ClipLoss math on hand-computed inputs (single process)."""

import math

import pytest
import torch
import torch.nn.functional as F

from clap_train.losses.contrastive import ClipLoss

# audio rows are the standard basis, so logits = scale * text^T: a.t = [[0.6, 1.0], [0.8, 0.0]]
AUDIO = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
TEXT = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)


def _hand_loss(scale: float) -> float:
    def ce(logits, label):
        return math.log(sum(math.exp(scale * x) for x in logits)) - scale * logits[label]

    audio_to_text = (ce([0.6, 1.0], 0) + ce([0.8, 0.0], 1)) / 2  # rows of a.t
    text_to_audio = (ce([0.6, 0.8], 0) + ce([1.0, 0.0], 1)) / 2  # columns of a.t
    return 0.5 * (audio_to_text + text_to_audio)


@pytest.mark.parametrize(("gather_with_grad", "local_loss"), [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_two_by_two_matches_hand_computation(scale, gather_with_grad, local_loss):
    loss_fn = ClipLoss(gather_with_grad=gather_with_grad, local_loss=local_loss)
    logit_scale = torch.tensor([math.log(scale)], dtype=torch.float64)
    loss = loss_fn(AUDIO, TEXT, logit_scale, logit_scale)
    assert loss.item() == pytest.approx(_hand_loss(scale), abs=1e-12)


def test_logit_scale_gradient_matches_finite_difference():
    logit_scale = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    ClipLoss()(AUDIO, TEXT, logit_scale, None).backward()
    eps = 1e-6
    numeric = (_hand_loss(math.exp(0.3 + eps)) - _hand_loss(math.exp(0.3 - eps))) / (2 * eps)
    assert logit_scale.grad.item() == pytest.approx(numeric, abs=1e-8)


def test_uses_only_logit_scale_a():
    loss_fn = ClipLoss()
    zero = torch.zeros(1, dtype=torch.float64)
    assert loss_fn(AUDIO, TEXT, zero, zero + 5.0).item() == pytest.approx(_hand_loss(1.0), abs=1e-12)


def test_perfectly_aligned_large_scale_goes_to_zero():
    embeds = torch.linalg.qr(torch.randn(16, 8, dtype=torch.float64)).Q.T  # 8 orthonormal rows
    loss = ClipLoss()(embeds, embeds, torch.tensor([math.log(100.0)], dtype=torch.float64))
    assert loss.item() < 1e-30


def test_local_loss_without_gradient_gather_is_rejected():
    with pytest.raises(ValueError, match="local_loss"):
        ClipLoss(gather_with_grad=False, local_loss=True)


def test_unpaired_shapes_are_rejected():
    with pytest.raises(ValueError, match="paired"):
        ClipLoss()(AUDIO, TEXT[:1], torch.zeros(1, dtype=torch.float64))


def test_labels_are_cached_per_size():
    loss_fn = ClipLoss()
    scale = torch.zeros(1, dtype=torch.float64)
    loss_fn(AUDIO, TEXT, scale)
    loss_fn(AUDIO, TEXT, scale)
    embeds = F.normalize(torch.randn(3, 2, dtype=torch.float64), dim=-1)
    loss_fn(embeds, embeds, scale)
    assert sorted(key[1] for key in loss_fn._labels) == [2, 3]
