"""Multi-positive InfoNCE and HN-NCE: 2 gloo ranks x B rows == one process x 2B rows (loss and gradients),
each checked against an explicit per-row formula written independently of the implementation."""

import math

import pytest
import torch

from clap_train.losses.contrastive import ClipLoss
from clap_train.losses.multipos import MultiPositiveLoss
from tests.distributed._dist import average_gradients, run_distributed
from tests.losses._toy import gradients, make_inputs, make_model

WORLD_SIZE, LOCAL_BATCH = 2, 3
TOLERANCE = 1e-10
# row 3 (rank 1) is another caption of row 0's clip; row 4 (rank 1) has row 1's caption text
PAIR_IDS = torch.tensor([[0, 10], [1, 11], [2, 12], [0, 13], [3, 11], [4, 14]])

LOSSES = {
    "multipos": lambda: MultiPositiveLoss(),
    "hn_global": lambda: ClipLoss(hard_negative_beta=0.7),
    "hn_local": lambda: ClipLoss(local_loss=True, hard_negative_beta=0.7),
    "hn_gather_no_grad": lambda: ClipLoss(gather_with_grad=False, hard_negative_beta=0.7),
}


def _row_losses(name: str, logits: torch.Tensor) -> torch.Tensor:
    """(N,) per-row loss of one direction from the (N, N) logits (rows: anchors)."""
    n = len(logits)
    out = []
    for i in range(n):
        row = logits[i]
        if name == "multipos":
            positives = [j for j in range(n) if (PAIR_IDS[i] == PAIR_IDS[j]).any()]
            log_prob = row - torch.logsumexp(row, dim=0)
            out.append(-sum(log_prob[j] for j in positives) / len(positives))
        else:
            beta = 0.7
            negatives = [j for j in range(n) if j != i]
            norm = sum(math.exp(beta * row[k].item()) for k in negatives)
            denominator = math.exp(row[i].item()) + sum(
                (n - 1) * math.exp(beta * row[j].item()) / norm * math.exp(row[j].item()) for j in negatives)
            out.append(torch.tensor(-(row[i].item() - math.log(denominator)), dtype=torch.float64))
    return torch.stack(out)


def _expected_rank_losses(name, audio, text, log_scale) -> list[float]:
    logits = log_scale.exp() * audio @ text.T  # (N, N)
    per_row = 0.5 * (_row_losses(name, logits) + _row_losses(name, logits.T))  # (N,)
    if name in ("multipos", "hn_local"):
        return [per_row[r * LOCAL_BATCH:(r + 1) * LOCAL_BATCH].mean().item() for r in range(WORLD_SIZE)]
    return [per_row.mean().item()] * WORLD_SIZE


def _loss(name, loss_fn, audio_embeds, text_embeds, model, rows):
    kwargs = {"pair_ids": PAIR_IDS[rows]} if name == "multipos" else {}
    return loss_fn(audio_embeds, text_embeds, model.logit_scale_a, model.logit_scale_t, **kwargs)


def _rank_step(rank, world_size, name, state, expected_rank_losses, expected_grads):
    model = make_model()
    model.load_state_dict(state)
    loss_fn = LOSSES[name]().double()
    audio, text = make_inputs(world_size * LOCAL_BATCH)
    shard = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    loss = _loss(name, loss_fn, *model(audio[shard], text[shard]), model, shard)
    loss.backward()
    assert abs(loss.item() - expected_rank_losses[rank]) < TOLERANCE, (name, rank, loss.item())
    average_gradients(model)
    for key, grad in gradients(model).items():
        assert torch.allclose(grad, expected_grads[key], atol=TOLERANCE, rtol=0), (name, key, grad)


@pytest.mark.parametrize("name", list(LOSSES))
def test_two_ranks_equal_one_big_batch(name):
    model = make_model()
    loss_fn = LOSSES[name]().double()
    audio, text = make_inputs(WORLD_SIZE * LOCAL_BATCH)
    audio_embeds, text_embeds = model(audio, text)
    loss = _loss(name, loss_fn, audio_embeds, text_embeds, model, slice(None))
    loss.backward()
    expected_grads = gradients(model)
    rank_losses = _expected_rank_losses(name, audio_embeds.detach(), text_embeds.detach(),
                                        model.logit_scale_a.detach())
    assert sum(rank_losses) / WORLD_SIZE == pytest.approx(loss.item(), abs=TOLERANCE)
    run_distributed(_rank_step, name, model.state_dict(), rank_losses, expected_grads)
