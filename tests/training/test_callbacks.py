"""EMA math and swapping, tower freezing/unfreezing, throughput logging and FLOP counting."""

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from clap_train.training.callbacks import EMA, FreezeTowers, ThroughputMonitor
from clap_train.training.flops import peak_flops, train_flops_per_sample
from tests.training._tiny import make_batch, make_loader, make_module


def fit(module, callbacks, max_steps, **trainer_kwargs):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **trainer_kwargs)
    trainer.fit(module, train_dataloaders=make_loader(2, 4))
    return trainer


def test_ema_update_follows_the_closed_form():
    model = nn.Linear(2, 1, bias=False)
    ema = EMA(decay=0.9, start_step=1)
    values = [1.0, 2.0, 4.0, -1.0]
    for step, value in enumerate(values, start=1):
        model.weight.data.fill_(value)
        ema.update(model, step)
    # step 1 (= start_step) copies; then e <- 0.9 e + 0.1 w
    expected = 1.0
    for value in values[1:]:
        expected = 0.9 * expected + 0.1 * value
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), expected))
    ema.swap(model)
    assert torch.allclose(model.weight, torch.full((1, 2), expected)) and ema.shadow["weight"][0, 0] == -1.0


def test_ema_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        EMA(decay=1.0)


class ValidationProbe(Callback):
    """Records the model weights the validation loop sees."""

    def __init__(self):
        self.seen = []

    def on_validation_start(self, trainer, pl_module):
        self.seen.append(pl_module.model.audio_encoder.stem.weight.detach().clone())


def test_ema_is_swapped_in_for_validation_and_saved(tmp_path):
    module = make_module()
    ema, probe = EMA(decay=0.5), ValidationProbe()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[ema, probe], default_root_dir=tmp_path,
                        enable_checkpointing=False, limit_val_batches=1, val_check_interval=3)
    trainer.fit(module, train_dataloaders=make_loader(3, 4), val_dataloaders=make_loader(1, 4))
    live = module.model.audio_encoder.stem.weight.detach()
    average = ema.shadow["audio_encoder.stem.weight"]
    assert not torch.allclose(live, average)
    assert torch.equal(probe.seen[-1], average)  # validation saw the EMA weights, training keeps its own
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["callbacks"]["EMA"]
    assert torch.equal(state["shadow"]["audio_encoder.stem.weight"], average)


def test_freeze_towers_until_the_unfreeze_step():
    module = make_module()
    tower, head = module.model.text_encoder.layers[0].ffn_in.weight, module.model.text_projection
    snapshots = []

    class Snapshot(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            snapshots.append((tower.detach().clone(), [p.detach().clone() for p in head.parameters()]))

    fit(module, [FreezeTowers(unfreeze_step=2), Snapshot()], max_steps=4)
    initial_tower = make_module().model.text_encoder.layers[0].ffn_in.weight
    assert torch.equal(snapshots[0][0], initial_tower) and torch.equal(snapshots[1][0], initial_tower)
    assert not torch.equal(snapshots[2][0], initial_tower)  # step 3 runs with the towers trainable
    assert not torch.equal(snapshots[0][1][0], snapshots[1][1][0])  # heads train throughout
    assert all(p.requires_grad for p in module.parameters())


def test_freeze_towers_refuses_ddp_without_unused_parameter_detection():
    from lightning.pytorch.strategies import DDPStrategy

    trainer = L.Trainer(accelerator="cpu", devices=1, strategy=DDPStrategy(), logger=False)
    with pytest.raises(ValueError, match="find_unused_parameters"):
        FreezeTowers(1).setup(trainer, make_module(), "fit")


def test_throughput_monitor_logs_rates_on_cpu():
    logged = {}

    class Capture(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("perf/")})

    fit(make_module(), [ThroughputMonitor(log_every_n_steps=2), Capture()], max_steps=4)
    assert logged["perf/samples_per_sec"] > 0
    assert 0.0 <= logged["perf/data_wait_fraction"] < 1.0
    assert "perf/mfu" not in logged  # no GPU peak on the CPU


def test_train_flops_per_sample_counts_matmuls_and_restores_rng():
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 4, bias=False)

        def forward(self, batch):
            return nn.functional.dropout(self.proj(batch["input_ids"].float()), 0.5)

    model = Linear()
    before = torch.get_rng_state()
    flops = train_flops_per_sample(model, {"input_ids": torch.ones(5, 8)})
    assert flops == 3 * 2 * 8 * 4  # per sample: 2 * in * out forward, x3 for forward + backward
    assert torch.equal(torch.get_rng_state(), before)


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_flops("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA A100-SXM4-40GB") == pytest.approx(312e12)
    assert peak_flops("Some CPU") is None
    assert math.isfinite(peak_flops("NVIDIA L4"))


def test_train_flops_per_sample_on_tiny_clap_is_positive():
    module = make_module()
    assert train_flops_per_sample(module.model, make_batch(2, 0)) > 0
