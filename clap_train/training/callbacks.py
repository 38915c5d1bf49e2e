"""Training callbacks: tower freezing with an unfreeze step, an EMA of the weights, throughput and MFU."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from clap_train.training.flops import peak_flops, train_flops_per_sample
from clap_train.training.optim import is_tower_parameter


class ThroughputMonitor(Callback):
    """Logs every `log_every_n_steps` optimizer steps, per device (rank):

    - `perf/samples_per_sec`: training samples per second on this device,
    - `perf/data_wait_fraction`: the share of wall time spent between one batch's end and the next one's
      start (waiting for the data loader, plus Lightning's own bookkeeping),
    - `perf/mfu` on a GPU with a known peak (`clap_train.training.flops.PEAK_FLOPS`, or `peak_flops` given): achieved model FLOP/s
      (`train_flops_per_sample`, counted once on the first batch) over the dense bf16 peak.
    On a GPU every batch end synchronises the device, so the times are those of finished work.

    Raises:
        ValueError: log_every_n_steps < 1 or peak_flops <= 0.
    """

    def __init__(self, log_every_n_steps: int = 50, peak_flops: float | None = None):
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, got {log_every_n_steps}")
        if peak_flops is not None and peak_flops <= 0:
            raise ValueError(f"peak_flops must be > 0 or None, got {peak_flops}")
        self.log_every_n_steps, self.peak = log_every_n_steps, peak_flops
        self.flops_per_sample: float | None = None
        self._reset(None)

    def _reset(self, start: float | None) -> None:
        self._window_start, self._last_end, self._wait, self._samples = start, start, 0.0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(None)
        if pl_module.device.type == "cuda" and self.peak is None:
            self.peak = peak_flops(torch.cuda.get_device_name(pl_module.device))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda" and self.peak is not None and self.flops_per_sample is None:
            self.flops_per_sample = train_flops_per_sample(pl_module.model, batch)
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        if self._last_end is None:  # the first batch of a window opened by on_train_start
            self._reset(now)
        self._wait += now - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        self._samples += len(batch["input_ids"])
        self._last_end = now
        if trainer.global_step % self.log_every_n_steps:
            return
        elapsed = now - self._window_start
        metrics = {"perf/samples_per_sec": self._samples / elapsed, "perf/data_wait_fraction": self._wait / elapsed}
        if self.flops_per_sample is not None and self.peak is not None:
            metrics["perf/mfu"] = self.flops_per_sample * self._samples / elapsed / self.peak
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=False)
        self._reset(now)


class FreezeTowers(Callback):
    """Train only the new parameters (projection heads, logit scales, loss) until `unfreeze_step`.

    The audio and text towers get `requires_grad=False` at the start of training (after the strategy wrapped
    the model, so DDP registered their hooks) and are unfrozen once `trainer.global_step` reaches
    `unfreeze_step` (None: never). They stay in the optimizer's groups; a parameter without a gradient is
    not updated (AdamW skips it: no step, no decay). A run resumed past `unfreeze_step` starts unfrozen.
    Under DDP, frozen parameters get no gradient, so the strategy needs `find_unused_parameters=True`
    (the `trainer=ddp` config sets it). Under FSDP2 the shards are toggled; FSDP2 passes
    `requires_grad` on to the unsharded parameters at every all-gather.

    Raises:
        ValueError: unfreeze_step < 0; at setup, under DDP without find_unused_parameters.
    """

    def __init__(self, unfreeze_step: int | None = None):
        if unfreeze_step is not None and unfreeze_step < 0:
            raise ValueError(f"unfreeze_step must be >= 0 or None, got {unfreeze_step}")
        self.unfreeze_step = unfreeze_step
        self.frozen = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters", False):
            raise ValueError("FreezeTowers under DDP needs DDPStrategy(find_unused_parameters=True)")

    def _set_towers(self, pl_module: L.LightningModule, trainable: bool) -> None:
        for name, param in pl_module.named_parameters():
            if is_tower_parameter(name):
                param.requires_grad_(trainable)
        self.frozen = not trainable

    def on_train_start(self, trainer, pl_module) -> None:
        if self.unfreeze_step is None or trainer.global_step < self.unfreeze_step:
            self._set_towers(pl_module, trainable=False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.frozen and self.unfreeze_step is not None and trainer.global_step >= self.unfreeze_step:
            self._set_towers(pl_module, trainable=True)


class EMA(Callback):
    """An exponential moving average of `pl_module.model`'s parameters, used for validation and checkpointed.

    After every optimizer step past `start_step`: ema <- decay * ema + (1 - decay) * param (float32 copies;
    at `start_step` and before, ema = param). During validation the EMA weights are swapped into the model
    and the training weights back afterwards. The EMA lives in the checkpoint under this callback's state
    (`checkpoint["callbacks"]["EMA"]["shadow"]`, keyed like `model.named_parameters()`, full tensors on the
    CPU). Buffers (batch-norm statistics) are not averaged. Single device and DDP: every rank holds the
    same EMA. FSDP: each rank holds the shard of its own parameter shards (DTensors, no extra memory per
    rank beyond a float32 copy of its shard); saving gathers one tensor at a time into the checkpoint
    (`state_dict` is then a collective, as Lightning calls it on every rank), loading re-shards it.

    Raises:
        ValueError: decay outside [0, 1) or start_step < 0.
    """

    def __init__(self, decay: float = 0.999, start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.decay, self.start_step = decay, start_step
        self.shadow: dict[str, torch.Tensor] | None = None
        self._restored = False  # shadow holds a checkpoint's full CPU tensors, not yet placed like the model

    @property
    def state_key(self) -> str:
        return "EMA"

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the current parameters into the average after optimizer step number `step`."""
        params = dict(model.named_parameters())
        if self.shadow is None or step <= self.start_step:
            self.shadow, self._restored = {name: param.detach().float().clone() for name, param in params.items()}, False
            return
        self._place(params)
        for name, average in self.shadow.items():  # a shard and its average share the layout: local math
            _local(average).lerp_(_local(params[name].detach()).float(), 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, model: nn.Module) -> None:
        """Exchange the model's parameters with the EMA copy (call twice to restore)."""
        self._place(dict(model.named_parameters()))
        for name, param in model.named_parameters():
            average, live = _local(self.shadow[name]), _local(param.detach())
            kept = live.float().clone()
            live.copy_(average)
            average.copy_(kept)

    def _place(self, params: dict[str, torch.Tensor]) -> None:
        """Move a restored average to the parameters' device and, under FSDP, shard it like them. Done at
        first use: FSDP restores checkpoints after `on_fit_start`."""
        if self._restored:
            self.shadow = {name: _like(value, params[name]) for name, value in self.shadow.items()}
            self._restored = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.update(pl_module.model, trainer.global_step)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.shadow is not None:
            self.swap(pl_module.model)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.shadow is not None:
            self.swap(pl_module.model)

    def state_dict(self) -> dict:
        shadow = None if self.shadow is None else {name: _full_cpu(value) for name, value in self.shadow.items()}
        return {"decay": self.decay, "start_step": self.start_step, "shadow": shadow}

    def load_state_dict(self, state_dict: dict) -> None:
        self.shadow = state_dict["shadow"]
        self._restored = self.shadow is not None


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a view: in-place ops write through), or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _full_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A plain CPU copy of `tensor`; a DTensor is gathered first (a collective)."""
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().cpu().clone()


def _like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """float32 `full` on `param`'s device, sharded like `param` when it is a DTensor (scattered from rank 0:
    a collective)."""
    if isinstance(param, DTensor):
        return distribute_tensor(full.float().to(param.device), param.device_mesh, param.placements)
    return full.float().to(param.device)
