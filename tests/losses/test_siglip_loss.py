"""SigLipLoss math on hand-computed inputs (single process)."""

import math

import pytest
import torch

from clap_train.losses.siglip import RECOMMENDED_LOGIT_SCALE_INIT, SigLipLoss

AUDIO = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
TEXT = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
DOTS = [[0.6, 1.0], [0.8, 0.0]]  # audio_i . text_j


def _hand_loss(scale: float, bias: float) -> float:
    total = 0.0
    for i in range(2):
        for j in range(2):
            sign = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-sign * (scale * DOTS[i][j] + bias)))  # -log sigmoid(sign * x)
    return total / 2  # normalised by the batch, not the number of pairs


@pytest.mark.parametrize(("scale", "bias"), [(1.0, -1.0), (10.0, -10.0), (3.0, 0.5)])
def test_two_by_two_matches_hand_computation(scale, bias):
    loss_fn = SigLipLoss(bias_init=bias).double()
    loss = loss_fn(AUDIO, TEXT, torch.tensor([math.log(scale)], dtype=torch.float64), None)
    assert loss.item() == pytest.approx(_hand_loss(scale, bias), abs=1e-12)


def test_bias_and_scale_gradients_match_finite_difference():
    loss_fn = SigLipLoss(bias_init=-1.0).double()
    logit_scale = torch.tensor([0.4], dtype=torch.float64, requires_grad=True)
    loss_fn(AUDIO, TEXT, logit_scale, None).backward()
    eps = 1e-6
    d_bias = (_hand_loss(math.exp(0.4), -1.0 + eps) - _hand_loss(math.exp(0.4), -1.0 - eps)) / (2 * eps)
    d_scale = (_hand_loss(math.exp(0.4 + eps), -1.0) - _hand_loss(math.exp(0.4 - eps), -1.0)) / (2 * eps)
    assert loss_fn.bias.grad.item() == pytest.approx(d_bias, abs=1e-8)
    assert logit_scale.grad.item() == pytest.approx(d_scale, abs=1e-8)


def test_bias_is_a_one_element_parameter_initialised_to_minus_ten():
    loss_fn = SigLipLoss()
    assert [name for name, _ in loss_fn.named_parameters()] == ["bias"]
    assert loss_fn.bias.shape == (1,) and loss_fn.bias.item() == -10.0
    assert math.exp(RECOMMENDED_LOGIT_SCALE_INIT) == pytest.approx(10.0)


def test_non_finite_bias_is_rejected():
    with pytest.raises(ValueError, match="bias_init"):
        SigLipLoss(bias_init=float("nan"))


def test_unpaired_shapes_are_rejected():
    with pytest.raises(ValueError, match="paired"):
        SigLipLoss()(AUDIO, TEXT[:1], torch.zeros(1))
