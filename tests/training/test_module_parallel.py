"""CLAPModule knobs: contrastive accumulation == a K-times larger batch, parameter groups, parallelize
(activation checkpointing, compile) exactness, bf16-mixed on the CPU."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from clap_train.distributed.parallelize import parallelize
from clap_train.train import check_accumulation
from clap_train.training.optim import param_groups, scale_learning_rates
from clap_train.training.strategy import FSDP2Strategy
from tests.training._tiny import make_batch, make_loader, make_model, make_module


def fit(module, max_steps, loader, **trainer_kwargs):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, **trainer_kwargs)
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def test_contrastive_accumulation_equals_one_large_batch():
    """K=2 chunks of 4 rows == one batch of 8 rows, over 2 steps with clipping, momentum and the schedule."""
    results = []
    for num_chunks in (1, 2):
        module = make_module(contrastive_accumulation=num_chunks, gradient_clip_val=0.05)
        assert module.automatic_optimization == (num_chunks == 1)
        trainer = fit(module, max_steps=2, loader=make_loader(2, 8))
        results.append((dict(module.named_parameters()), trainer.optimizers[0].param_groups[0]["lr"],
                        trainer.global_step))
    (single, lr_single, steps_single), (chunked, lr_chunked, steps_chunked) = results
    assert steps_single == steps_chunked == 2
    assert lr_single == lr_chunked  # the scheduler stepped in manual optimization too
    for name, param in single.items():
        assert torch.allclose(param, chunked[name], atol=1e-6, rtol=0), name
    initial = make_model().audio_encoder.stem.weight
    assert (single["model.audio_encoder.stem.weight"] - initial).abs().max() > 1e-4  # training moved it


def test_contrastive_accumulation_validation():
    with pytest.raises(ValueError, match="contrastive_accumulation"):
        make_module(contrastive_accumulation=0)
    with pytest.raises(ValueError, match="gradient_clip_val"):
        make_module(gradient_clip_val=0.0)


def test_fsdp_accumulation_refuses_fp16_loss_scaling_at_start_up():
    """Under FSDP, GradCache's loss step writes unscaled gradients: 16-mixed (a GradScaler) is refused by the
    build, before any data is read. A fake trainer holds the real strategy (fp16 AMP needs a GPU)."""
    scaled = SimpleNamespace(strategy=FSDP2Strategy(), precision_plugin=SimpleNamespace(scaler=object()),
                             precision="16-mixed")
    with pytest.raises(ValueError, match="module.contrastive_accumulation > 1 under FSDP needs a precision"):
        check_accumulation(2, scaled)
    check_accumulation(1, scaled)
    check_accumulation(2, SimpleNamespace(strategy=FSDP2Strategy(), precision_plugin=SimpleNamespace(scaler=None)))


def test_param_groups_tower_lr_and_no_decay():
    module = make_module()
    groups = {group["name"]: group for group in param_groups(module, weight_decay=0.1, tower_lr_scale=0.1)}
    assert set(groups) == {"towers", "towers_no_decay", "new", "new_no_decay"}
    names = {id(p): n for n, p in module.named_parameters()}
    group_of = {names[id(p)]: name for name, group in groups.items() for p in group["params"]}
    assert group_of["model.text_encoder.layers.0.ffn_in.weight"] == "towers"
    assert group_of["model.text_encoder.layers.0.ffn_in.bias"] == "towers_no_decay"
    assert group_of["model.text_encoder.embeddings.word_embeddings.weight"] == "towers_no_decay"
    assert group_of["model.audio_encoder.layers.0.norm.weight"] == "towers_no_decay"
    assert group_of["model.logit_scale_a"] == "new_no_decay"
    assert all(group_of[n] == "new" for n, p in module.named_parameters() if "projection" in n and p.ndim == 2)
    assert len(group_of) == len(names)  # every parameter in exactly one group
    optimizer = torch.optim.AdamW(list(groups.values()), lr=1e-3)
    scale_learning_rates(optimizer)
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs["towers"] == pytest.approx(1e-4) and lrs["new"] == pytest.approx(1e-3)
    assert {g["name"]: g["weight_decay"] for g in optimizer.param_groups}["new_no_decay"] == 0.0
    with pytest.raises(ValueError, match="tower_lr_scale"):
        param_groups(module, 0.1, tower_lr_scale=-1)


@pytest.mark.parametrize("compile", [False, "aot_eager"])
def test_parallelize_checkpointing_and_compile_keep_names_and_gradients(compile):
    reference, model = make_model(), make_model()
    parallelize(model, mesh=None, fsdp=False, activation_checkpointing=True, compile=compile)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    batch = make_batch(4, seed=5)
    for m in (reference, model):
        embeds = m(batch)
        (embeds["audio_embeds"] @ embeds["text_embeds"].T).sum().backward()
    for (name, expected), actual in zip(reference.named_parameters(), model.parameters()):
        if expected.grad is None:  # the logit scales are not used here
            assert actual.grad is None, name
        else:
            assert torch.allclose(expected.grad, actual.grad, atol=1e-6, rtol=0), name


def test_parallelize_validation():
    with pytest.raises(ValueError, match="mesh"):
        parallelize(make_model(), mesh=None, fsdp=True)
    with pytest.raises(TypeError, match="compile"):
        parallelize(make_model(), mesh=None, fsdp=False, compile=1)
    with pytest.raises(ValueError, match="blocks"):
        parallelize(torch.nn.Linear(2, 2), mesh=None, fsdp=False)


def test_bf16_mixed_trains_on_cpu():
    module = make_module(gradient_clip_val=1.0)
    before = module.model.audio_projection.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    trainer = fit(module, max_steps=2, loader=make_loader(2, 4), precision="bf16-mixed")
    assert trainer.global_step == 2
    after = module.model.audio_projection.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
