"""Multi-positive InfoNCE and HN-NCE: reductions to InfoNCE, what the positives are, validation (1 process)."""

import math

import pytest
import torch

from clap_train.losses.contrastive import ClipLoss, hard_negative_logits
from clap_train.losses.multipos import MultiPositiveLoss, pair_ids
from tests.losses._toy import make_inputs, make_model


def _embeds(num_rows=6):
    audio, text = make_inputs(num_rows)
    return make_model()(audio, text)


def test_multipos_without_repeats_is_infonce():
    audio, text = _embeds()
    scale = torch.tensor([math.log(20.0)], dtype=torch.float64)
    ids = torch.stack([torch.arange(6), torch.arange(6) + 100], dim=1)
    expected = ClipLoss()(audio, text, scale)
    assert MultiPositiveLoss()(audio, text, scale, pair_ids=ids).item() == pytest.approx(expected.item(), abs=1e-12)
    assert MultiPositiveLoss()(audio, text, scale).item() == pytest.approx(expected.item(), abs=1e-12)


def test_identical_captions_are_not_pushed_apart():
    # two clips with the same caption: their texts are identical, so InfoNCE cannot tell them apart while
    # the multi-positive loss is satisfied once each audio is close to that text
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    text = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64) / math.sqrt(2)
    scale = torch.tensor([math.log(50.0)], dtype=torch.float64)
    ids = pair_ids(["a", "b"], ["the sound of a piano", "the sound of a piano"], torch.tensor([0, 1]))
    assert ids[0, 1] == ids[1, 1] and ids[0, 0] != ids[1, 0]
    multipos = MultiPositiveLoss()(audio, text, scale, pair_ids=ids).item()
    assert multipos == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2), abs=1e-9)  # uniform = the target
    plain = ClipLoss()(audio, text, scale).item()
    assert plain == pytest.approx(math.log(2), abs=1e-9)
    # moving audio 1 onto the shared text lowers the multi-positive loss to its minimum
    audio_both = text.clone()
    assert MultiPositiveLoss()(audio_both, text, scale, pair_ids=ids).item() <= multipos + 1e-12


def test_pair_ids_hash_keys_and_texts_stably():
    keys = ["clip/0", "clip/1"]
    ids = pair_ids(keys, ["a dog barks", "a dog barks ", "rain"], torch.tensor([0, 0, 1]))
    assert ids.shape == (3, 2) and ids.dtype == torch.long
    assert ids[0, 0] == ids[1, 0] != ids[2, 0]  # clip of each caption
    assert ids[0, 1] == ids[1, 1] != ids[2, 1]  # caption text, surrounding spaces ignored
    assert torch.equal(ids, pair_ids(keys, ["a dog barks", "a dog barks ", "rain"], torch.tensor([0, 0, 1])))
    with pytest.raises(ValueError, match="captions"):
        pair_ids(keys, ["a"], torch.tensor([0, 1]))


def test_multipos_rejects_bad_pair_ids():
    audio, text = _embeds()
    with pytest.raises(ValueError, match="pair_ids"):
        MultiPositiveLoss()(audio, text, torch.zeros(1, dtype=torch.float64), pair_ids=torch.zeros(6, 3))


@pytest.mark.parametrize("local_loss", [False, True])
def test_hard_negative_beta_zero_is_infonce_exactly(local_loss):
    audio, text = _embeds()
    scale = torch.tensor([math.log(14.0)], dtype=torch.float64)
    plain = ClipLoss(local_loss=local_loss)(audio, text, scale)
    assert torch.equal(ClipLoss(local_loss=local_loss, hard_negative_beta=0.0)(audio, text, scale), plain)
    assert not torch.equal(ClipLoss(local_loss=local_loss, hard_negative_beta=0.5)(audio, text, scale), plain)


def test_hard_negative_weights_favour_similar_negatives():
    logits = torch.tensor([[2.0, 1.5, -1.0, 0.0]], dtype=torch.float64)
    shifted = hard_negative_logits(logits, torch.tensor([0]), beta=1.0)
    weights = (shifted - logits).exp()[0, 1:]
    assert shifted[0, 0] == logits[0, 0]
    assert weights.sum().item() == pytest.approx(3.0, abs=1e-12)  # mean weight over the negatives is 1
    assert weights[0] > weights[2] > weights[1]  # ordered like the negatives' logits


@pytest.mark.parametrize("beta", [-0.1, float("nan"), float("inf")])
def test_bad_hard_negative_beta_is_rejected(beta):
    with pytest.raises(ValueError, match="hard_negative_beta"):
        ClipLoss(hard_negative_beta=beta)


def test_training_step_passes_pair_ids_to_losses_that_ask():
    from clap_train.training.step import loss_inputs

    batch = {"key": ["k0", "k1"], "captions": ["rain", "rain"], "text_to_audio": torch.tensor([0, 1])}
    assert loss_inputs(ClipLoss(), batch) == {}
    ids = loss_inputs(MultiPositiveLoss(), batch)["pair_ids"]
    assert torch.equal(ids, pair_ids(batch["key"], batch["captions"], batch["text_to_audio"]))
