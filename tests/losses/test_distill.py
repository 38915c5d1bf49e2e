"""DistillationLoss: KL to the teacher's similarity distributions; exact on 2 gloo ranks; set-up errors."""

import pytest
import torch
import torch.nn.functional as F

from clap_train.losses.contrastive import ClipLoss
from clap_train.losses.distill import DistillationLoss
from clap_train.losses.multipos import MultiPositiveLoss
from clap_train.training.distill import check_distill_config
from tests.distributed._dist import average_gradients, run_distributed
from tests.losses._toy import gradients, make_inputs, make_model

WORLD_SIZE, LOCAL_BATCH, TOLERANCE = 2, 3, 1e-10
WEIGHT = 0.7


def _teacher(num_rows):
    generator = torch.Generator().manual_seed(5)
    audio = F.normalize(torch.randn(num_rows, 3, generator=generator, dtype=torch.float64), dim=1)
    text = F.normalize(torch.randn(num_rows, 3, generator=generator, dtype=torch.float64), dim=1)
    return {"teacher_audio": audio, "teacher_text": text, "teacher_logit_scale": torch.tensor(9.0, dtype=torch.float64)}


def _rows(teacher, rows):
    return {k: (v[rows] if v.dim() else v) for k, v in teacher.items()}


def _expected_kd_rows(audio, text, log_scale, teacher) -> torch.Tensor:
    """(N,) per-row KD term from the full batch, written with explicit probabilities."""
    student = log_scale.exp() * audio @ text.T
    teacher_logits = teacher["teacher_logit_scale"] * teacher["teacher_audio"] @ teacher["teacher_text"].T
    def kl(t, s):
        p = t.softmax(dim=1)
        return (p * (p.log() - s.softmax(dim=1).log())).sum(dim=1)
    return 0.5 * (kl(teacher_logits, student) + kl(teacher_logits.T, student.T))


def test_value_is_base_plus_weighted_kl_and_zero_when_teacher_equals_student():
    model = make_model()
    audio, text = model(*make_inputs(6))
    teacher = _teacher(6)
    base = ClipLoss()
    loss = DistillationLoss(base, weight=WEIGHT)(audio, text, model.logit_scale_a, **teacher)
    expected = base(audio, text, model.logit_scale_a) + WEIGHT * _expected_kd_rows(
        audio, text, model.logit_scale_a, teacher).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    same = {"teacher_audio": audio.detach(), "teacher_text": text.detach(),
            "teacher_logit_scale": model.logit_scale_a.detach().exp().squeeze()}
    assert DistillationLoss(base, weight=5.0)(audio, text, model.logit_scale_a, **same).item() == pytest.approx(
        base(audio, text, model.logit_scale_a).item(), abs=1e-12)


def _rank_step(rank, world_size, state, expected_rank_losses, expected_grads):
    model = make_model()
    model.load_state_dict(state)
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    audio, text = make_inputs(world_size * LOCAL_BATCH)
    ids = torch.tensor([[0, 10], [1, 11], [2, 12], [0, 13], [3, 11], [4, 14]])
    loss_fn = DistillationLoss(MultiPositiveLoss(), weight=WEIGHT)
    loss = loss_fn(*model(audio[rows], text[rows]), model.logit_scale_a, pair_ids=ids[rows],
                   **_rows(_teacher(world_size * LOCAL_BATCH), rows))
    loss.backward()
    assert abs(loss.item() - expected_rank_losses[rank]) < TOLERANCE, (rank, loss.item())
    average_gradients(model)
    for key, grad in gradients(model).items():
        assert torch.allclose(grad, expected_grads[key], atol=TOLERANCE, rtol=0), key


def test_two_ranks_equal_one_big_batch():
    model = make_model()
    audio, text = model(*make_inputs(WORLD_SIZE * LOCAL_BATCH))
    ids = torch.tensor([[0, 10], [1, 11], [2, 12], [0, 13], [3, 11], [4, 14]])
    teacher = _teacher(WORLD_SIZE * LOCAL_BATCH)
    loss = DistillationLoss(MultiPositiveLoss(), weight=WEIGHT)(audio, text, model.logit_scale_a, pair_ids=ids,
                                                                 **teacher)
    loss.backward()
    expected_grads = gradients(model)
    kd_rows = _expected_kd_rows(audio.detach(), text.detach(), model.logit_scale_a.detach(), teacher)
    rank_losses = [_single_rank_value(model, audio, text, ids, teacher, kd_rows, r) for r in range(WORLD_SIZE)]
    assert sum(rank_losses) / WORLD_SIZE == pytest.approx(loss.item(), abs=TOLERANCE)
    run_distributed(_rank_step, model.state_dict(), rank_losses, expected_grads)


def _single_rank_value(model, audio, text, ids, teacher, kd_rows, rank):
    """Rank r's L_r = its rows' multi-positive loss against all columns + weight * its rows' KD."""
    logits = model.logit_scale_a.detach().exp() * audio.detach() @ text.detach().T  # (N, N)
    positives = (ids[:, None, :] == ids[None, :, :]).any(dim=2).double()
    targets = positives / positives.sum(dim=1, keepdim=True)
    per_row = 0.5 * (-(targets * logits.log_softmax(dim=1)).sum(dim=1) - (targets * logits.T.log_softmax(dim=1)).sum(dim=1))
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    return (per_row[rows].mean() + WEIGHT * kd_rows[rows].mean()).item()


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="distill.weight"):
        DistillationLoss(ClipLoss(), weight=-1.0)
    with pytest.raises(ValueError, match="distill.teacher"):
        check_distill_config({"weight": 1.0})
    with pytest.raises(ValueError, match="distill.teacher"):
        check_distill_config({"teacher": "x", "temperature": 2.0})
    check_distill_config({"teacher": "x", "weight": 0.5})
