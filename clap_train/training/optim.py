"""Optimizer parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

TOWERS = ("audio_encoder", "text_encoder")


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights, embeddings and logit scales get no weight decay."""
    return param.ndim < 2 or "embeddings" in name or "logit_scale" in name or "norm" in name.lower()


def is_tower_parameter(name: str) -> bool:
    """Parameters of the (usually pretrained) audio and text towers, e.g. `model.audio_encoder.…`."""
    return any(part in TOWERS for part in name.split("."))


def param_groups(module: nn.Module, weight_decay: float, tower_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: {tower, new} x {decay, no decay}, empty groups dropped.

    Args:
        module: the LightningModule (or model); parameter names decide the groups.
        weight_decay: for weight matrices; biases, norms, embeddings and logit scales get 0.
        tower_lr_scale: learning-rate multiplier of the tower groups relative to the optimizer's lr (e.g. 0.1
            for pretrained towers next to freshly initialised projection heads). It is stored as the group's
            `lr_scale` and applied by `scale_learning_rates` once the optimizer exists.
    Each group carries a `name` (the LR monitor's label). Parameters with `requires_grad=False` are left out.

    Raises:
        ValueError: weight_decay < 0 or tower_lr_scale < 0.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if tower_lr_scale < 0:
        raise ValueError(f"tower_lr_scale must be >= 0, got {tower_lr_scale}")
    groups = {
        (tower, no_decay): {
            "name": f"{'towers' if tower else 'new'}{'_no_decay' if no_decay else ''}",
            "params": [],
            "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": tower_lr_scale if tower else 1.0,
        }
        for tower in (True, False)
        for no_decay in (False, True)
    }
    for name, param in module.named_parameters():
        if param.requires_grad:
            groups[(is_tower_parameter(name), is_no_decay(name, param))]["params"].append(param)
    return [group for group in groups.values() if group["params"]]


def scale_learning_rates(optimizer: torch.optim.Optimizer) -> None:
    """Multiply each group's lr by its `lr_scale`; call before building the scheduler (it reads these lrs)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)


def warmup_cosine(warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """LR multiplier: linear 0 -> 1 over `warmup_steps`, then cosine down to `min_lr_ratio` at `total_steps`."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"module.scheduler: need warmup_steps >= 0 and total_steps (default: trainer.max_steps) >= 1, "
                         f"got warmup_steps={warmup_steps}, total_steps={total_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
        super().__init__(optimizer, warmup_cosine(warmup_steps, total_steps, min_lr_ratio))
